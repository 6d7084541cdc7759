"""The operators and argument kinds an exported program may use (torch 2.14 export IR).

A node's target is ``torch.ops.aten.<name>.<overload>``; ``<name>`` must be listed here
(any overload), unless the full target is refused below. A task adds names with
``[integrity] operators = [...]``. Higher-order operators (control flow, wrapped
subgraphs), custom operators and anything outside ``aten`` are refused.
"""

from __future__ import annotations

# fmt: off
ALLOWED = frozenset({
    # layers
    "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
    "conv_transpose3d", "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "addmv", "mv",
    "einsum", "embedding", "scaled_dot_product_attention", "prelu", "_prelu_kernel",
    # normalization
    "batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
    "_batch_norm_no_update", "layer_norm", "native_layer_norm", "group_norm",
    "native_group_norm", "instance_norm", "rms_norm", "_fused_rms_norm",
    "linalg_vector_norm", "norm", "local_response_norm",
    # activations
    "relu", "relu_", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
    "sigmoid", "tanh", "hardtanh", "hardswish", "hardsigmoid", "softplus", "softsign",
    "log_sigmoid", "logsigmoid", "tanhshrink", "threshold", "glu", "softmax", "_softmax",
    "log_softmax", "_log_softmax", "hardshrink", "softshrink", "rrelu",
    # pooling and resizing
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "avg_pool1d",
    "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "adaptive_max_pool1d", "adaptive_max_pool2d", "_adaptive_avg_pool2d",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_bilinear2d", "upsample_bicubic2d",
    "_upsample_nearest_exact2d", "pixel_shuffle", "pixel_unshuffle", "pad",
    "constant_pad_nd", "reflection_pad1d", "reflection_pad2d", "replication_pad2d",
    # dropout (identity in eval mode; randomness shows in the determinism check)
    "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout",
    "rand", "randn", "rand_like", "randn_like", "bernoulli",
    # arithmetic and reductions
    "add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_", "neg", "abs", "pow", "sqrt",
    "rsqrt", "square", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "reciprocal",
    "sin", "cos", "tan", "atan", "atan2", "erf", "sign", "clamp", "clamp_", "clamp_min",
    "clamp_max", "clip", "maximum", "minimum", "where", "lerp", "addcmul", "addcdiv",
    "mean", "sum", "prod", "amax", "amin", "max", "min", "std", "var", "var_mean",
    "std_mean", "logsumexp", "cumsum", "argmax", "argmin", "eq", "ne", "lt", "le", "gt",
    "ge", "logical_and", "logical_or", "logical_not", "isnan", "nan_to_num", "topk", "sort",
    "cross_entropy_loss",
    # shapes and copies
    "view", "_unsafe_view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze",
    "permute", "transpose", "t", "contiguous", "clone", "expand", "expand_as", "repeat",
    "cat", "concat", "concatenate", "stack", "hstack", "vstack", "split", "split_with_sizes",
    "chunk", "unbind", "narrow", "slice", "select", "index", "index_select", "gather",
    "flip", "roll", "tile", "movedim", "alias", "detach", "detach_", "lift_fresh_copy",
    "to", "_to_copy", "type_as", "zeros", "zeros_like", "ones", "ones_like", "full",
    "full_like", "empty", "empty_like", "new_zeros", "new_ones", "new_full", "new_empty",
    "arange", "linspace", "fill", "fill_", "masked_fill", "scalar_tensor", "copy", "copy_",
    "_assert_tensor_metadata", "_assert_scalar", "size", "dim",
})
# fmt: on

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
    return name in ALLOWED or name in extra
