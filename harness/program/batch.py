"""Whether each image's prediction depends on that image alone: a proof over the checked
program's graph (JSON and static shapes only, no torch).

Phase B must be a pure function of each image: not of the call order (``check_purity``
refuses every write into a stored tensor), not of randomness, and not of the other images
in its batch. The last is checked by running the whole split again in another order and
batch composition (``runner.predict.determinism``), which doubles phase B's inference.
When the graph itself proves it, that re-run adds nothing and is skipped.

The proof follows every value from the model's input to its output and gives it one of
three states:

- **batched** (``Batched(dim, inner)``): dimension ``dim`` holds the images, ``inner``
  consecutive rows per image (1, or more after a reshape merged an image's own rows into
  it, as window attention does), and every row is computed from its own image's rows and
  from free values only;
- **free**: computed from stored tensors and literals alone, the same at every call
  (``uniform``: the dimensions along which it holds one value, e.g. an ``expand``-ed class
  token, which may therefore sit beside any image);
- **mixed**: anything the rules below cannot follow (a reduction over the images, a
  matrix product across them, batch statistics, random values, a stored table indexed by
  position in the batch, an operator the rules do not know). A mixed value is harmless
  unless it reaches the output.

Each operator family has a rule that says where the image dimension goes, checked again
against the output's static shape. The proof holds when the output is batched along
dimension 0 with one row per image. An in-place write is followed only into a batched
value with operands aligned to it (the views sharing its memory then stay right); any
other in-place write ends the proof. Anything unproven is not an error: the whole-split
re-run then runs as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .flow import tensor_refs
from .hop import hop_call, inline_bodies
from .ops import ALLOWED, DROPOUT, INPLACE, POINTWISE, RANDOM, higher_order
from .records import Program, tensor_meta


@dataclass(frozen=True)
class Batched:
    """Dimension ``dim`` holds the images: of its ``outer * batch * inner`` indices, image
    ``k`` owns ``o * batch * inner + k * inner + i`` (``inner`` rows of its own in a
    block, the blocks repeated ``outer`` times, as a sequence-first attention lays out
    ``(tokens * batch, features)``)."""

    dim: int
    inner: int = 1
    outer: int = 1

    @property
    def unit(self) -> tuple[int, int]:
        return self.inner, self.outer

    def at(self, dim: int) -> Batched:
        return Batched(dim, self.inner, self.outer)


@dataclass(frozen=True)
class Free:
    uniform: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Mixed:
    reason: str


State = Batched | Free | Mixed


@dataclass(frozen=True)
class Independence:
    """The proof's outcome: ``proven``, and what was shown or the first step it could not
    follow (an operator and why)."""

    proven: bool
    reason: str


class _Stop(Exception):
    """An in-place write the proof cannot follow: nothing after it can be trusted."""


PROVEN = "each image's output depends only on that image (proved from the graph)"


def independence(program: Program, batch: int) -> Independence:
    """Prove (or not) that the program's output row ``i`` depends only on input row ``i``."""
    nodes = inline_bodies(program.nodes)
    shapes = dict(program.shapes)
    _body_shapes(program.nodes, "", shapes)
    if batch == 1:  # one image per call: only randomness could make a difference
        for node in nodes:
            if _listed(node["target"]) is None:  # a task's own operator: it may be random
                return Independence(False, f"{_short(node)} is not followed by the proof")
            if _draws(node, _name(node["target"])):
                return Independence(False, f"{_short(node)} draws random values")
        return Independence(True, PROVEN)
    walk = _Walk(shapes, batch)
    walk.states[program.user_input] = Batched(0)
    try:
        for node in nodes:
            walk.node(node)
    except _Stop as stop:
        return Independence(False, str(stop))
    except Exception as exc:  # never a reason to fail a grading: the re-run decides
        return Independence(False, f"the proof stopped ({type(exc).__name__})")
    out = walk.state(program.output)
    if out == Batched(0):
        return Independence(True, PROVEN)
    if isinstance(out, Mixed):
        return Independence(False, out.reason)
    if isinstance(out, Free) and 0 in out.uniform:
        return Independence(True, PROVEN)
    return Independence(False, "the output is not laid out one row per image")


def _body_shapes(nodes: list[dict[str, Any]], tag: str, shapes: dict[str, tuple[int, ...]]) -> None:
    """The static shapes of values inside higher-order bodies, named as ``inline_bodies``
    names them (``hop<k>.`` prefixes)."""
    for k, node in enumerate(nodes):
        if not higher_order(node["target"]):
            continue
        call = hop_call(node)
        inner = f"{tag}hop{k}."
        for name, meta in call.body.get("tensor_values", {}).items():
            shapes[inner + name] = tensor_meta(meta, f"graph tensor {name[:60]!r}")[1]
        _body_shapes(call.body["nodes"], inner, shapes)


def _draws(node: dict[str, Any], name: str) -> bool:
    """Whether the node draws random values (dropout only when training) or reads
    uninitialized memory."""
    if ALLOWED.get(name) == DROPOUT:
        return _arg(node, "train") is not False
    return ALLOWED.get(name) == RANDOM or name in UNINITIALIZED


def _listed(target: str) -> str | None:
    """The allow-list's reason for ``target`` (by name, or name and overload)."""
    name, _, overload = target.removeprefix("torch.ops.aten.").partition(".")
    return ALLOWED.get(name) or ALLOWED.get(f"{name}.{overload}")


def _name(target: str) -> str:
    return target.removeprefix("torch.ops.aten.").partition(".")[0]


def _short(node: dict[str, Any]) -> str:
    return str(node["target"]).removeprefix("torch.ops.")[:80]


UNINITIALIZED = frozenset({"empty", "empty_like", "new_empty"})
CREATE_UNIFORM = frozenset({
    "zeros", "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones",
    "new_full", "scalar_tensor",
})  # fmt: skip
SAME_SHAPE = frozenset({
    "contiguous", "clone", "alias", "detach", "detach_", "lift_fresh_copy", "to", "_to_copy",
    "type_as",
})  # fmt: skip
RESHAPES = frozenset({
    "view", "_unsafe_view", "reshape", "reshape_as", "view_as", "flatten", "unflatten",
    "squeeze", "unsqueeze",
})  # fmt: skip
POINTWISE_EXTRA = frozenset({
    "copy", "copy_", "fill", "fill_", "masked_fill", "masked_fill_", "where",
})  # fmt: skip
REDUCTIONS = frozenset({
    "mean", "sum", "prod", "amax", "amin", "max", "min", "std", "var", "var_mean", "std_mean",
    "logsumexp", "argmax", "argmin", "linalg_vector_norm", "norm",
})  # fmt: skip
ALONG_DIM = frozenset({
    "softmax", "_softmax", "log_softmax", "_log_softmax", "glu", "cumsum", "sort", "topk",
})  # fmt: skip
# spatial (trailing) dimensions a windowed operator works on; the leading ones are kept
SPATIAL = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "max_pool2d_with_indices": 2,
    "avg_pool1d": 1, "avg_pool2d": 2, "avg_pool3d": 3, "adaptive_avg_pool1d": 1,
    "adaptive_avg_pool2d": 2, "adaptive_avg_pool3d": 3, "adaptive_max_pool1d": 1,
    "adaptive_max_pool2d": 2, "_adaptive_avg_pool2d": 2, "upsample_nearest1d": 1,
    "upsample_nearest2d": 2, "upsample_bilinear2d": 2, "upsample_bicubic2d": 2,
    "_upsample_nearest_exact2d": 2, "reflection_pad1d": 1, "reflection_pad2d": 2,
    "replication_pad2d": 2, "pixel_shuffle": 3, "pixel_unshuffle": 3,
}  # fmt: skip
CONV = frozenset({
    "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d",
})  # fmt: skip
BATCH_NORMS = frozenset({
    "batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
    "_batch_norm_no_update",
})  # fmt: skip
LAST_DIMS_NORMS = frozenset({"layer_norm", "native_layer_norm", "rms_norm", "_fused_rms_norm"})
RNNS = frozenset({"lstm", "gru", "rnn_tanh", "rnn_relu"})
# argument defaults the serialized node may leave out
DEFAULT_DIM = {"sort": -1, "topk": -1, "split": 0, "split_with_sizes": 0, "chunk": 0,
               "unbind": 0, "slice": 0, "cat": 0, "concat": 0, "concatenate": 0, "stack": 0,
               "glu": -1}  # fmt: skip


def _arg(node: dict[str, Any], name: str, default: Any = None) -> Any:
    """A node argument's plain value (an int, list, bool, float, tensor name), or
    ``default`` when the node leaves it out."""
    for named in node["inputs"]:
        if named.get("name") == name:
            ((kind, value),) = named["arg"].items()
            if kind == "as_tensor":
                return value["name"]
            if kind == "as_none":
                return None
            if kind in ("as_tensors",):
                return [t["name"] for t in value]
            if kind == "as_optional_tensors":
                return [t["as_tensor"]["name"] if "as_tensor" in t else None for t in value]
            return value
    return default


class _Walk:
    def __init__(self, shapes: dict[str, tuple[int, ...]], batch: int) -> None:
        self.shapes = shapes
        self.batch = batch
        self.states: dict[str, State] = {}
        self.op = ""

    def state(self, name: str) -> State:
        return self.states.get(name, Free())

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes.get(name, ())

    # --- one node --------------------------------------------------------------------

    def node(self, node: dict[str, Any]) -> None:
        outs = [r for out in node["outputs"] for r in tensor_refs(out)] if node["outputs"] else []
        refs = [r for named in node["inputs"] for r in tensor_refs(named["arg"])]
        states = [self.state(r) for r in refs]
        name = _name(node["target"])
        self.op = _short(node)
        mixed = next((s for s in states if isinstance(s, Mixed)), None)
        if _listed(node["target"]) is None:  # a task's own operator: nothing is known of it
            result: list[State] = [Mixed(f"{self.op} is not followed by the proof")] * len(outs)
        elif ALLOWED.get(name) == DROPOUT and not _draws(node, name):
            result = [states[0] if states else Free()] * len(outs)  # identity
        elif _draws(node, name):
            result = [Mixed(f"{_short(node)} draws random values")] * len(outs)
        elif mixed is not None:
            result = [mixed] * len(outs)
        elif all(isinstance(s, Free) for s in states):
            result = self._free(node, name, refs, outs)
        else:
            try:
                result = self._rule(node, name, outs)
            except Exception:  # an argument the rules did not expect: not followed
                result = [Mixed(f"{_short(node)}: its arguments are not understood")] * len(outs)
        unknown = Mixed(f"{self.op}: an output the rules do not describe")
        result = [*result, *[unknown] * (len(outs) - len(result))]  # never a default Free
        if name.endswith("_") and not name.startswith("_") or name == "copy_":
            self._written(node, refs, result)
        for out, st in zip(outs, result, strict=False):
            self.states[out] = self._checked(node, out, st)

    def _checked(self, node: dict[str, Any], out: str, st: State) -> State:
        """``st`` if ``out``'s static shape agrees with it (a guard on the rules)."""
        if isinstance(st, Batched):
            shape = self.shape(out)
            if not (0 <= st.dim < len(shape)) or shape[st.dim] != self.batch * st.inner * st.outer:
                return Mixed(f"{_short(node)}: the images' dimension is lost")
        return st

    def _written(self, node: dict[str, Any], refs: list[str], result: list[State]) -> None:
        target = self.state(refs[0]) if refs else Free()
        after = result[0] if result else Mixed("")
        if isinstance(target, Free) and isinstance(after, Free):
            # a free value written with free values (a mask built in place): still free,
            # but any view of it may no longer hold one value along a dimension
            for name, st in self.states.items():
                if isinstance(st, Free) and st.uniform:
                    self.states[name] = Free()
            result[0] = Free()
            return
        if not isinstance(target, Batched) or after != target:
            raise _Stop(f"{_short(node)} writes in place into a value the proof cannot follow")

    def _free(
        self, node: dict[str, Any], name: str, refs: list[str], outs: list[str]
    ) -> list[State]:
        if name in CREATE_UNIFORM:
            return [Free(frozenset(range(len(self.shape(o))))) for o in outs]
        if name in ("expand", "expand_as", "repeat", "tile") and refs:
            return [self._expanded_free(node, name, refs[0], outs[0])]
        if name in SAME_SHAPE and refs:
            return [self.state(refs[0])] * len(outs)
        return [Free()] * len(outs)

    def _expanded_free(self, node: dict[str, Any], name: str, ref: str, out: str) -> State:
        before, after = self.shape(ref), self.shape(out)
        off = len(after) - len(before)
        st = self.state(ref)
        if not isinstance(st, Free):
            raise ValueError(ref)
        # one value along: a new dimension, a size-1 one spread out, or one that already was
        uniform = frozenset(
            j for j in range(len(after)) if j < off or before[j - off] == 1 or j - off in st.uniform
        )
        return Free(uniform)

    # --- rules for a node with a batched operand --------------------------------------

    def _rule(self, node: dict[str, Any], name: str, outs: list[str]) -> list[State]:
        n = len(outs)
        why = Mixed(f"{_short(node)} combines different images")
        if name in CREATE_UNIFORM:  # its values do not depend on the tensor it copies
            return self._free(node, name, [], outs)
        carried = _arg(node, "self")
        if name in (SAME_SHAPE | RESHAPES | {"expand", "expand_as"}) and isinstance(
            self.state(carried), Free
        ):  # the other operand gives only a shape or a dtype
            return self._free(node, name, [carried], outs)
        if name in ("prelu", "_prelu_kernel"):  # its weight is per channel (dimension 1)
            return [self._leading(node, "self", ("weight",), why)]
        if (
            ALLOWED.get(name) in (POINTWISE, INPLACE)
            or name in POINTWISE_EXTRA
            or (name in ("max", "min") and _arg(node, "other") is not None)
        ):
            return [self._pointwise(node, outs[0], why)] * n
        if name in SAME_SHAPE or name in RESHAPES:
            return [self._reshape(_arg(node, "self") or _arg(node, "input"), outs[0], node)] * n
        if name in ("expand", "expand_as"):
            st = self._batched(node, "self")
            return [st.at(st.dim + len(self.shape(outs[0])) - len(self.shape(_arg(node, "self"))))]
        if name in ("repeat", "tile"):
            return [self._repeat(node, name, outs[0], why)]
        if name in ("permute", "transpose", "swapaxes", "swapdims", "t", "movedim"):
            return [self._permute(node, name, why)]
        if name in ("cat", "concat", "concatenate", "stack"):
            return [self._cat(node, name, outs[0], why)]
        if name in ("split", "split_with_sizes", "chunk", "unbind", "slice", "narrow", "select",
                    "flip", "roll", "unfold"):  # fmt: skip
            return [self._cut(node, name, why)] * n
        if name in ALONG_DIM:
            return [self._along(node, name, why)] * n
        if name in REDUCTIONS:
            return self._reduce(node, name, outs, why)
        if name in CONV:
            return [self._leading(node, "input", ("weight", "bias"), why, exact=True)] * n
        if name in SPATIAL:
            return [self._spatial(node, SPATIAL[name], why)] * n
        if name in ("pad", "constant_pad_nd"):
            pad = _arg(node, "pad")
            return [self._spatial(node, len(pad) // 2, why)] * n
        if name in ("im2col", "col2im", "affine_grid_generator"):
            return [
                self._leading(node, "self" if name != "affine_grid_generator" else "theta", (), why)
            ] * n
        if name in ("grid_sampler", "grid_sampler_2d", "grid_sampler_3d"):
            return [self._same_leading(node, ("input", "grid"), why)] * n
        if name in BATCH_NORMS:
            return self._batch_norm(node, name, outs, why)
        if name in LAST_DIMS_NORMS:
            return [self._last_dims(node, len(_arg(node, "normalized_shape")), why)] * n
        if name in ("group_norm", "native_group_norm", "instance_norm"):
            return [
                self._leading(node, "input", ("weight", "bias", "running_mean", "running_var"), why)
            ] * n
        if name in ("linear",):
            return [self._last_dims(node, 1, why, data="input", weights=("weight", "bias"))]
        if name in ("mm", "bmm", "matmul", "addmm", "baddbmm", "mv", "addmv"):
            return [self._matmul(node, name, outs[0], why)]
        if name == "einsum":
            return [self._einsum(node, outs[0], why)]
        if name == "scaled_dot_product_attention":
            return [self._attention(node, outs[0], why)]
        if name == "embedding":
            return [self._embedding(node, why)]
        if name == "index_select":
            return [self._index_select(node, why)]
        if name == "gather":
            return [self._gather(node, why)]
        if name == "index":
            return [self._index(node, outs[0], why)]
        if name in RNNS:
            return self._rnn(node, name, outs, why)
        return [Mixed(f"{_short(node)} is not followed by the proof")] * n

    def _batched(self, node: dict[str, Any], arg: str) -> Batched:
        st = self.state(_arg(node, arg))
        if not isinstance(st, Batched):
            raise ValueError(arg)
        return st

    def _pointwise(self, node: dict[str, Any], out: str, why: Mixed) -> State:
        """Broadcasting elementwise: the batched operands share one aligned dimension, and
        a free operand holds one value along it (size 1, or uniform)."""
        refs = [r for named in node["inputs"] for r in tensor_refs(named["arg"])]
        return self._aligned(refs, len(self.shape(out)), why)

    def _aligned(self, refs: list[str], out_ndim: int, why: Mixed) -> State:
        from_end = {
            len(self.shape(r)) - s.dim for r in refs if isinstance(s := self.state(r), Batched)
        }
        inners = {s.unit for r in refs if isinstance(s := self.state(r), Batched)}
        if len(from_end) != 1 or len(inners) != 1:
            return why
        back = from_end.pop()
        for r in refs:
            st = self.state(r)
            if isinstance(st, Free) and not self._uniform_at(r, st, len(self.shape(r)) - back):
                return Mixed(f"{self.op} treats the images by their place in the batch")
        inner, outer = inners.pop()
        return Batched(out_ndim - back, inner, outer)

    def _uniform_at(self, ref: str, st: Free, dim: int) -> bool:
        shape = self.shape(ref)
        return dim < 0 or shape[dim] == 1 or dim in st.uniform

    def _reshape(self, ref: str, out: str, node: dict[str, Any]) -> State:
        """A reshape keeps the row-major order: in flat offsets image ``k`` owns
        ``(q * batch + k) * block + s`` for ``q < groups``, ``s < block``. Some output
        dimension must split the same way: ``groups`` = the elements before it times its
        ``outer``, ``block`` = its ``inner`` times the elements after it."""
        st = self.state(ref)
        if not isinstance(st, Batched):
            raise ValueError(ref)
        before, after = self.shape(ref), self.shape(out)
        groups = math.prod(before[: st.dim]) * st.outer
        block = math.prod(before[st.dim + 1 :]) * st.inner
        for j, size in enumerate(after):
            head, tail = math.prod(after[:j]), math.prod(after[j + 1 :])
            if groups % head or block % tail:
                continue
            outer, inner = groups // head, block // tail
            if size == outer * self.batch * inner:
                return Batched(j, inner, outer)
        return Mixed(f"{_short(node)} interleaves the images' rows")

    def _repeat(self, node: dict[str, Any], name: str, out: str, why: Mixed) -> State:
        st = self._batched(node, "self")
        reps = list(_arg(node, "repeats") or _arg(node, "dims"))
        ndim = len(self.shape(_arg(node, "self")))
        if len(reps) < ndim:
            reps = [1] * (ndim - len(reps)) + reps
        off = len(reps) - ndim
        return st.at(st.dim + off) if reps[st.dim + off] == 1 else why

    def _permute(self, node: dict[str, Any], name: str, why: Mixed) -> State:
        st = self._batched(node, "self")
        ndim = len(self.shape(_arg(node, "self")))
        order = list(range(ndim))
        if name == "permute":
            order = [d % ndim for d in _arg(node, "dims")]
        elif name == "t":
            order = order[::-1]
        elif name == "movedim":
            src, dst = _arg(node, "source"), _arg(node, "destination")
            src = [d % ndim for d in ([src] if isinstance(src, int) else src)]
            dst = [d % ndim for d in ([dst] if isinstance(dst, int) else dst)]
            rest = iter(d for d in range(ndim) if d not in src)
            placed = dict(zip(dst, src, strict=True))
            order = [placed[i] if i in placed else next(rest) for i in range(ndim)]
        else:
            first, second = ("axis0", "axis1") if name == "swapaxes" else ("dim0", "dim1")
            a = _arg(node, first) % ndim
            b = _arg(node, second) % ndim
            order[a], order[b] = order[b], order[a]
        return st.at(order.index(st.dim))

    def _cat(self, node: dict[str, Any], name: str, out: str, why: Mixed) -> State:
        refs = _arg(node, "tensors")
        ndim = max(len(self.shape(r)) for r in refs)
        dim = _arg(node, "dim", 0) % (ndim + (name == "stack"))
        got = self._aligned(refs, ndim, why)
        if not isinstance(got, Batched):
            return got
        if name == "stack":
            return got.at(got.dim + (dim <= got.dim))
        return why if dim == got.dim else got

    def _cut(self, node: dict[str, Any], name: str, why: Mixed) -> State:
        st = self._batched(node, "self")
        ndim = len(self.shape(_arg(node, "self")))
        dims: list[int]
        if name in ("flip", "roll"):
            dims = _arg(node, "dims") or []
            if name == "roll" and not dims:
                return why
        elif name == "unfold":
            dims = [_arg(node, "dimension")]
        else:
            dims = [_arg(node, "dim", DEFAULT_DIM.get(name, 0))]
        dims = [d % ndim for d in dims]
        if name == "slice" and st.dim in dims:
            start, end, step = _arg(node, "start"), _arg(node, "end"), _arg(node, "step", 1)
            size = self.shape(_arg(node, "self"))[st.dim]
            if (start in (None, 0)) and (end is None or end >= size) and step == 1:
                return st
        if st.dim in dims:
            return why
        if name in ("select", "unbind"):
            return st.at(st.dim - (dims[0] < st.dim))
        return st

    def _along(self, node: dict[str, Any], name: str, why: Mixed) -> State:
        st = self._batched(node, "self")
        ndim = len(self.shape(_arg(node, "self")))
        dim = _arg(node, "dim", DEFAULT_DIM.get(name))
        return why if dim is None or dim % ndim == st.dim else st

    def _reduce(self, node: dict[str, Any], name: str, outs: list[str], why: Mixed) -> list[State]:
        st = self._batched(node, "self")
        ndim = len(self.shape(_arg(node, "self")))
        dims = _arg(node, "dim")
        if dims is None or dims == []:
            return [why] * len(outs)
        dims = [d % ndim for d in ([dims] if isinstance(dims, int) else dims)]
        if st.dim in dims:
            return [why] * len(outs)
        keep = bool(_arg(node, "keepdim", False))
        dim = st.dim if keep else st.dim - sum(d < st.dim for d in dims)
        return [st.at(dim)] * len(outs)

    def _leading(
        self,
        node: dict[str, Any],
        data: str,
        weights: tuple[str, ...],
        why: Mixed,
        exact: bool = False,
    ) -> State:
        """The images on dimension 0 of ``data``, kept there; ``weights`` free."""
        st = self._batched(node, data)
        if st.dim != 0 or any(
            not isinstance(self.state(_arg(node, w)), Free)
            for w in weights
            if _arg(node, w) is not None
        ):
            return why
        if exact and node["target"].split(".")[-2].startswith("conv"):
            weight = self.shape(_arg(node, "weight"))
            if len(self.shape(_arg(node, data))) != len(weight):  # unbatched: dim 0 is channels
                return why
        return st

    def _spatial(self, node: dict[str, Any], spatial: int, why: Mixed) -> State:
        """A windowed operator over the last ``spatial`` dimensions: the others are kept."""
        arg = "self" if _arg(node, "self") is not None else "input"
        st = self._batched(node, arg)
        ndim = len(self.shape(_arg(node, arg)))
        return st if st.dim < ndim - spatial else why

    def _same_leading(self, node: dict[str, Any], args: tuple[str, ...], why: Mixed) -> State:
        refs = [_arg(node, a) for a in args]
        for r in refs:
            st = self.state(r)
            if isinstance(st, Batched) and st.dim != 0:
                return why
        return self._aligned_front(refs, why)

    def _aligned_front(self, refs: list[str], why: Mixed) -> State:
        """Operands aligned on dimension 0 (not broadcast from the end)."""
        inners = {s.unit for r in refs if isinstance(s := self.state(r), Batched)}
        if len(inners) != 1:
            return why
        for r in refs:
            st = self.state(r)
            if isinstance(st, Free) and not self._uniform_at(r, st, 0):
                return why
        inner, outer = inners.pop()
        return Batched(0, inner, outer)

    def _batch_norm(
        self, node: dict[str, Any], name: str, outs: list[str], why: Mixed
    ) -> list[State]:
        training = _arg(node, "training", False)
        stats = (_arg(node, "running_mean"), _arg(node, "running_var"))
        if training or None in stats:
            return [Mixed(f"{_short(node)} normalizes with the batch's statistics")] * len(outs)
        got = self._leading(node, "input", ("weight", "bias", "running_mean", "running_var"), why)
        return [got] + [Mixed(f"{_short(node)}: statistics output")] * (len(outs) - 1)

    def _last_dims(
        self,
        node: dict[str, Any],
        last: int,
        why: Mixed,
        data: str = "input",
        weights: tuple[str, ...] = ("weight", "bias"),
    ) -> State:
        """Works on the last ``last`` dimensions (a layer norm, a linear layer)."""
        st = self._batched(node, data)
        ndim = len(self.shape(_arg(node, data)))
        if any(
            not isinstance(self.state(_arg(node, w)), Free)
            for w in weights
            if _arg(node, w) is not None
        ):
            return why
        return st if st.dim < ndim - last else why

    def _matmul(self, node: dict[str, Any], name: str, out: str, why: Mixed) -> State:
        a_name, b_name = {
            "mm": ("self", "mat2"), "bmm": ("self", "mat2"), "matmul": ("self", "other"),
            "addmm": ("mat1", "mat2"), "baddbmm": ("batch1", "batch2"), "mv": ("self", "vec"),
            "addmv": ("mat", "vec"),
        }[name]  # fmt: skip
        a, b = _arg(node, a_name), _arg(node, b_name)
        sa, sb = self.state(a), self.state(b)
        na, nb, no = len(self.shape(a)), len(self.shape(b)), len(self.shape(out))
        if na < 2 or nb < 1:
            return why
        got: State
        if nb == 1:  # matrix x vector: the last dimension goes, the others keep their place
            ok = isinstance(sa, Batched) and isinstance(sb, Free) and sa.dim < na - 1
            got = sa if ok else why
        else:
            got = self._matmul_2d(sa, sb, na, nb, no, a, b, why)
        if name in ("addmm", "baddbmm", "addmv") and isinstance(got, Batched):
            bias = _arg(node, "self")
            sbias = self.state(bias)
            back = no - got.dim
            if isinstance(sbias, Batched):
                if len(self.shape(bias)) - sbias.dim != back or sbias.unit != got.unit:
                    return why
            elif isinstance(sbias, Free) and not self._uniform_at(
                bias, sbias, len(self.shape(bias)) - back
            ):
                return why
        return got

    def _matmul_2d(
        self, sa: State, sb: State, na: int, nb: int, no: int, a: str, b: str, why: Mixed
    ) -> State:
        if isinstance(sa, Batched) and sa.dim == na - 1:
            return why  # contracted
        if isinstance(sb, Batched) and sb.dim == nb - 2:
            return why  # contracted
        if isinstance(sa, Batched) and sa.dim == na - 2:  # the rows
            return sa.at(no - 2) if isinstance(sb, Free) else why
        if isinstance(sb, Batched) and sb.dim == nb - 1:  # the columns
            return sb.at(no - 1) if isinstance(sa, Free) else why
        # the images on a leading (broadcast) dimension of one or both
        return self._aligned([a, b], no, why)

    def _einsum(self, node: dict[str, Any], out: str, why: Mixed) -> State:
        equation = str(_arg(node, "equation")).replace(" ", "")
        if "..." in equation or "->" not in equation:
            return why
        left, result = equation.split("->")
        terms = left.split(",")
        refs = _arg(node, "tensors")
        letters, inners = set(), set()
        for term, r in zip(terms, refs, strict=True):
            st = self.state(r)
            if isinstance(st, Batched):
                letters.add(term[st.dim])
                inners.add(st.unit)
        if len(letters) != 1 or len(inners) != 1:
            return why
        letter = letters.pop()
        for term, r in zip(terms, refs, strict=True):
            st = self.state(r)
            if (
                isinstance(st, Free)
                and letter in term
                and not self._uniform_at(r, st, term.index(letter))
            ):
                return why
            if isinstance(st, Batched) and term.count(letter) != 1:
                return why
        if letter not in result:
            return why
        inner, outer = inners.pop()
        return Batched(result.index(letter), inner, outer)

    def _attention(self, node: dict[str, Any], out: str, why: Mixed) -> State:
        if float(_arg(node, "dropout_p", 0.0) or 0.0) != 0.0:
            return Mixed(f"{_short(node)} draws random values")
        refs = [r for r in (_arg(node, k) for k in ("query", "key", "value", "attn_mask")) if r]
        for r in refs:
            st = self.state(r)
            if isinstance(st, Batched) and st.dim >= len(self.shape(r)) - 2:
                return why  # the images on the sequence or feature dimension
        return self._aligned(refs, len(self.shape(out)), why)

    def _embedding(self, node: dict[str, Any], why: Mixed) -> State:
        if not isinstance(self.state(_arg(node, "weight")), Free):
            return why
        return self._batched(node, "indices")

    def _index_select(self, node: dict[str, Any], why: Mixed) -> State:
        st = self._batched(node, "self")
        ndim = len(self.shape(_arg(node, "self")))
        if (
            not isinstance(self.state(_arg(node, "index")), Free)
            or _arg(node, "dim") % ndim == st.dim
        ):
            return why
        return st

    def _gather(self, node: dict[str, Any], why: Mixed) -> State:
        s, i = self.state(_arg(node, "self")), self.state(_arg(node, "index"))
        ndim = len(self.shape(_arg(node, "self")))
        if isinstance(s, Batched) and s == i and _arg(node, "dim") % ndim != s.dim:
            return s
        return why

    def _index(self, node: dict[str, Any], out: str, why: Mixed) -> State:
        """``self[indices]`` with free index tensors, none on the images' dimension."""
        st = self._batched(node, "self")
        indices = _arg(node, "indices")
        at = [k for k, t in enumerate(indices) if t is not None]
        if st.dim in at or any(not isinstance(self.state(indices[k]), Free) for k in at):
            return why
        width = max(len(self.shape(indices[k])) for k in at)
        if at == list(range(at[0], at[-1] + 1)):  # adjacent: replaced in place
            dim = st.dim if st.dim < at[0] else st.dim - len(at) + width
        else:  # apart: the indexed dimensions go first
            dim = width + st.dim - sum(k < st.dim for k in at)
        return st.at(dim)

    def _rnn(self, node: dict[str, Any], name: str, outs: list[str], why: Mixed) -> list[State]:
        first = bool(_arg(node, "batch_first", False))
        if _arg(node, "train") and float(_arg(node, "dropout", 0.0) or 0.0) != 0.0:
            return [Mixed(f"{_short(node)} draws random values")] * len(outs)
        if any(not isinstance(self.state(p), Free) for p in _arg(node, "params") or []):
            return [why] * len(outs)
        st = self._batched(node, "input")
        if st.dim != (0 if first else 1) or st.unit != (1, 1):
            return [why] * len(outs)
        hx = _arg(node, "hx")
        for h in [hx] if isinstance(hx, str) else (hx or []):
            sh = self.state(h)
            if isinstance(sh, Batched) and sh != Batched(1):
                return [why] * len(outs)
            if isinstance(sh, Free) and not self._uniform_at(h, sh, 1):
                return [why] * len(outs)
        hidden: list[State] = [Batched(1)] * (len(outs) - 1)
        return [st, *hidden]
