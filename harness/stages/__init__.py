"""The stages of one grading, in order, each a function from one frozen record to the next:

=============  ==================  =========================================
module         function            record in -> record out
=============  ==================  =========================================
``validate``   ``admit``           Submission -> Admitted (or a settled document)
``weights``    ``count_weights``   Admitted -> Counted
``export``     ``export``          Counted -> Exported (phase A, sandbox)
``check``      ``check``           Exported -> Checked (host: no torch)
``predict``    ``predict``         Checked -> Predicted (phase B, sandbox)
               ``eager``           Counted -> Predicted (the task's fallback)
``score``      ``score``           Predicted -> Scored
``document``   ``graded``          Scored -> ResultDocument
               ``ended``           a stage's ``Failed`` -> ResultDocument
=============  ==================  =========================================

A stage never mutates what it is given; it returns a new record or raises
``verdicts.Failed``, which ``document.ended`` turns into the grading's result.
``harness.pipeline`` calls them in this order; the records live in ``records.py``.
"""
