"""The operators and argument kinds an exported program may use (torch 2.14 export IR).

A node's target is ``torch.ops.aten.<name>.<overload>``; ``<name>`` (any overload) or
``<name>.<overload>`` must be listed in ``ALLOWED``, unless the full target is refused in
``DENIED``. A task adds names with ``[integrity] operators = [...]``. Custom operators
and anything outside ``aten`` are refused; of the higher-order operators only the
wrappers in ``HIGHER_ORDER`` (a subgraph run under a mode), whose body passes the same
check.

How the list is designed. Phase B runs these kernels on the hidden inputs with no
submission code, so each operator on the list must be safe as a kernel, whatever the
values it gets:

- no I/O: it computes on tensors only (no files, sockets, processes, printing);
- no pointers from data: a tensor's values never become an address; where values are
  used as indices (``gather``, ``embedding``, ``index``) or coordinates (``grid_sampler``)
  the kernel checks them against the tensor's bounds (an error or a zero, never a read
  outside);
- no unbounded allocation: the output's size follows from the graph's static shapes and
  integer arguments (checked by the host), never from the values (``nonzero``,
  ``unique``, ``masked_select`` are not listed); the sandbox's memory limit caps the rest.

Each group of names below carries its reason. In-place forms (``relu_``, ``hardtanh_`` for
``nn.ReLU6(inplace=True)``, ``silu_``, ``dropout_``, ...) are listed for the elementwise
functions whose result may overwrite their input: the same kernel, writing into its
input's storage; the graph check (``export_graph``) allows that write only into a tensor
made inside the graph, never into a parameter, buffer, constant or the user input.
"""

from __future__ import annotations


def _names(names: str, reason: str) -> dict[str, str]:
    return dict.fromkeys(names.split(), reason)


DENSE = "dense kernel: fixed loops over static shapes; output size from static arguments"
NORM = "normalization over static shapes with stored statistics; reads only its inputs"
POINTWISE = "elementwise: each output value from the same position of its inputs"
INPLACE = POINTWISE + "; writes its input (allowed only on tensors made in the graph)"
DROPOUT = "identity in eval mode, else a random mask of the input's own size"
RANDOM = "random values of a static size (a change shows in the determinism check)"
POOL = "windowed kernel: reads a window of static size at static offsets"
ALONG = "along one static dimension: output the input's size (glu: half of it)"
REDUCE = "reduction over static dimensions; output size from the input's static shape"
INDEX = "values used as indices are bounds-checked by the kernel (an error, never a read)"
SHAPE = "a view or copy with a size from static shapes and integer arguments"
CREATE = "a new tensor whose size is given by static integers in the graph"
META = "checks or reads a tensor's static metadata; computes nothing from values"
RNN = (
    "a fixed recurrence over the static sequence length (input overload: no packed "
    "lengths from data), weights passed as tensors"
)
SAMPLE = (
    "sampling at coordinates from data: the kernel clamps, reflects or zero-pads every "
    "coordinate outside the input (never a read outside)"
)

# fmt: off
ALLOWED: dict[str, str] = {
    **_names("conv1d conv2d conv3d convolution conv_transpose1d conv_transpose2d "
             "conv_transpose3d linear matmul mm bmm addmm baddbmm addmv mv einsum "
             "scaled_dot_product_attention prelu _prelu_kernel", DENSE),
    **_names("embedding gather index index_select", INDEX),
    **_names("batch_norm _native_batch_norm_legit_no_training native_batch_norm "
             "_batch_norm_no_update layer_norm native_layer_norm group_norm native_group_norm "
             "instance_norm rms_norm _fused_rms_norm linalg_vector_norm norm", NORM),
    # activations
    **_names("relu relu6 leaky_relu elu selu celu gelu silu mish sigmoid tanh hardtanh "
             "hardswish hardsigmoid softplus log_sigmoid threshold hardshrink softshrink",
             POINTWISE),
    **_names("softmax _softmax log_softmax _log_softmax glu", ALONG),
    "rrelu": RANDOM,
    # in-place forms of the functions above (nn.ReLU6(inplace=True) is aten.hardtanh_)
    **_names("relu_ relu6_ leaky_relu_ elu_ selu_ celu_ gelu_ silu_ mish_ sigmoid_ tanh_ "
             "hardtanh_ hardswish_ hardsigmoid_ threshold_ add_ sub_ mul_ div_ clamp_ "
             "clamp_min_ clamp_max_ neg_ abs_ exp_ sqrt_ masked_fill_", INPLACE),
    # pooling and resizing
    **_names("max_pool1d max_pool2d max_pool3d max_pool2d_with_indices avg_pool1d avg_pool2d "
             "avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d "
             "adaptive_max_pool1d adaptive_max_pool2d _adaptive_avg_pool2d", POOL),
    **_names("upsample_nearest1d upsample_nearest2d upsample_bilinear2d upsample_bicubic2d "
             "_upsample_nearest_exact2d pixel_shuffle pixel_unshuffle pad constant_pad_nd "
             "reflection_pad1d reflection_pad2d replication_pad2d", POOL),
    # patches cut by hand (Tensor.unfold), im2col: fixed windows at static strides
    **_names("unfold im2col col2im", POOL),
    # spatial transformers (F.affine_grid, F.grid_sample)
    "affine_grid_generator": DENSE,
    **_names("grid_sampler grid_sampler_2d grid_sampler_3d", SAMPLE),
    # recurrent layers (nn.LSTM, nn.GRU, nn.RNN over image rows)
    **_names("lstm.input gru.input rnn_tanh.input rnn_relu.input", RNN),
    # dropout (identity in eval mode; randomness shows in the determinism check)
    **_names("dropout feature_dropout alpha_dropout feature_alpha_dropout native_dropout "
             "dropout_ feature_dropout_ alpha_dropout_ feature_alpha_dropout_", DROPOUT),
    **_names("rand randn rand_like randn_like bernoulli", RANDOM),
    # arithmetic and comparisons
    **_names("add sub rsub mul div neg abs pow sqrt rsqrt square exp exp2 expm1 log log2 log10 "
             "log1p reciprocal sin cos tan atan atan2 erf sign clamp clamp_min clamp_max clip "
             "maximum minimum where lerp addcmul addcdiv eq ne lt le gt ge logical_and "
             "logical_or logical_not bitwise_not isnan nan_to_num", POINTWISE),
    **_names("mean sum prod amax amin max min std var var_mean std_mean logsumexp cumsum "
             "argmax argmin topk sort cross_entropy_loss", REDUCE),
    # shapes and copies
    **_names("view _unsafe_view reshape reshape_as view_as flatten unflatten squeeze unsqueeze "
             "permute transpose swapaxes swapdims t contiguous clone expand expand_as repeat "
             "cat concat concatenate stack hstack vstack split split_with_sizes chunk unbind "
             "narrow slice select flip roll tile movedim alias detach detach_ lift_fresh_copy "
             "to _to_copy type_as masked_fill copy copy_ fill fill_", SHAPE),
    **_names("zeros zeros_like ones ones_like full full_like empty empty_like new_zeros "
             "new_ones new_full new_empty arange linspace scalar_tensor", CREATE),
    **_names("_assert_tensor_metadata _assert_scalar size dim", META),
}
# fmt: on

# higher-order operators: a subgraph run under a mode that does not change what is
# computed from what; the body is checked like the graph itself (one level deep)
HIGHER_ORDER: dict[str, str] = {
    # `with torch.autocast(...)` (timm EfficientViT): the body's kernels, maybe in bf16/fp16
    "torch.ops.higher_order.wrap_with_autocast": "runs its checked body under autocast",
    # `with torch.no_grad()` / `torch.enable_grad()`: grad mode changes no value
    "torch.ops.higher_order.wrap_with_set_grad_enabled": "runs its checked body",
}
# the plain arguments before the subgraph, by kind (then the body, then its tensors)
HIGHER_ORDER_ARGS: dict[str, tuple[tuple[str, ...], ...]] = {
    "torch.ops.higher_order.wrap_with_autocast": (
        ("as_string", "as_none"),  # device type
        ("as_scalar_type", "as_none"),  # dtype
        ("as_bool", "as_none"),  # enabled
        ("as_bool", "as_none"),  # cache enabled
    ),
    "torch.ops.higher_order.wrap_with_set_grad_enabled": (("as_bool",),),
}

# full targets refused whatever the list says, with what they do
DENIED = {
    "torch.ops.aten.view.dtype": (
        "reinterprets a tensor's bytes as another dtype (view.dtype): packing values, "
        "e.g. int8 in float32, is not allowed"
    ),
}

ARG_KINDS = frozenset({
    "as_none", "as_tensor", "as_tensors", "as_int", "as_ints", "as_float", "as_floats",
    "as_string", "as_strings", "as_bool", "as_bools", "as_scalar_type", "as_memory_format",
    "as_layout", "as_device", "as_optional_tensors", "as_optional_tensor",
})  # fmt: skip

PREFIX = "torch.ops.aten."


def denial(target: str) -> str | None:
    """Why ``target`` is refused outright, or None."""
    return DENIED.get(target)


def allowed_target(target: str, extra: tuple[str, ...] = ()) -> bool:
    if not target.startswith(PREFIX):
        return False
    name, _, overload = target[len(PREFIX) :].partition(".")
    if not name or not overload or "." in overload:
        return False
    return name in ALLOWED or f"{name}.{overload}" in ALLOWED or name in extra


def higher_order(target: str) -> bool:
    """Whether ``target`` is an allowed higher-order operator (its body is checked apart)."""
    return target in HIGHER_ORDER
