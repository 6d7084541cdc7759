"""The docker sandbox: ``engine`` (the Docker SDK calls), ``image`` (building the evaluation
image, offline or from the Dockerfile) and ``backend`` (one fresh container per run). The
only package that imports the Docker SDK; imported when the docker backend is first used."""
