"""Real architectures as students hand them in: each entry is the ``model.py`` of a
submission (torchvision and timm models built without pretrained weights, and the
hand-written styles of courses and PyTorch's own tutorials).

Shapes: ``"cifar"`` models take 3 x 32 x 32 images, ``"mnist"`` models 1 x 28 x 28; every
model returns 10 logits. Sizes are chosen small where the library allows (width
multipliers, fewer blocks) so the suite stays fast; a few full-size models (11-15 M
parameters) check that larger weights files pass too.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    name: str
    source: str  # the model.py
    shape: str  # "cifar" or "mnist"
    family: str  # "torchvision", "timm" or "student"


def _tv(expr: str) -> str:
    return (
        "import torchvision\nfrom torchvision.models import convnext, densenet, efficientnet, "
        f"resnet\n\n\ndef build_model():\n    return torchvision.models.{expr}\n"
    )


def _timm(name: str, **kwargs: object) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    return (
        "import timm\n\n\ndef build_model():\n"
        f"    return timm.create_model({name!r}, pretrained=False, num_classes=10{extra})\n"
    )


TORCHVISION = {
    "tv_resnet18": _tv("resnet18(num_classes=10)"),
    "tv_resnet_small": _tv("resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], num_classes=10)"),
    "tv_resnext_small": _tv(
        "resnet.ResNet(resnet.Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=8, "
        "num_classes=10)"
    ),
    "tv_mobilenet_v2": _tv("mobilenet_v2(num_classes=10, width_mult=0.5)"),
    "tv_mobilenet_v3_small": _tv("mobilenet_v3_small(num_classes=10)"),
    "tv_mobilenet_v3_large": _tv("mobilenet_v3_large(num_classes=10, width_mult=0.5)"),
    "tv_efficientnet_b0": _tv("efficientnet_b0(num_classes=10)"),
    "tv_mnasnet0_5": _tv("mnasnet0_5(num_classes=10)"),
    "tv_shufflenet_v2_x0_5": _tv("shufflenet_v2_x0_5(num_classes=10)"),
    "tv_squeezenet1_0": _tv("squeezenet1_0(num_classes=10)"),
    "tv_squeezenet1_1": _tv("squeezenet1_1(num_classes=10)"),
    "tv_densenet_small": _tv(
        "densenet.DenseNet(growth_rate=12, block_config=(2, 2, 2), num_init_features=16, "
        "num_classes=10)"
    ),
    "tv_googlenet": _tv("googlenet(num_classes=10, aux_logits=False, init_weights=False)"),
    "tv_regnet_x_400mf": _tv("regnet_x_400mf(num_classes=10)"),
    "tv_regnet_y_400mf": _tv("regnet_y_400mf(num_classes=10)"),
    "tv_vit_small": _tv(
        "VisionTransformer(image_size=32, patch_size=4, num_layers=2, num_heads=2, "
        "hidden_dim=64, mlp_dim=128, num_classes=10)"
    ),
    "tv_swin_small": _tv(
        "SwinTransformer(patch_size=[2, 2], embed_dim=24, depths=[2, 2], num_heads=[2, 4], "
        "window_size=[4, 4], num_classes=10)"
    ),
    "tv_maxvit_small": _tv(
        "MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2, "
        "block_channels=[16, 32], block_layers=[1, 1], head_dim=8, "
        "stochastic_depth_prob=0.0, num_classes=10)"
    ),
    "tv_convnext_small": _tv(
        "ConvNeXt([convnext.CNBlockConfig(24, 48, 1), convnext.CNBlockConfig(48, None, 1)], "
        "num_classes=10)"
    ),
    "tv_efficientnet_v2_small": _tv(
        "EfficientNet([efficientnet.FusedMBConvConfig(1, 3, 1, 16, 16, 1), "
        "efficientnet.MBConvConfig(4, 3, 2, 16, 32, 1)], dropout=0.2, num_classes=10, "
        "last_channel=64)"
    ),
}

TIMM = {
    "timm_mobilenetv3_small_050": _timm("mobilenetv3_small_050"),
    "timm_mobilenetv3_large_075": _timm("mobilenetv3_large_075"),
    "timm_mobilenetv2_050": _timm("mobilenetv2_050"),
    "timm_efficientnet_b0": _timm("efficientnet_b0"),
    "timm_tf_efficientnet_lite0": _timm("tf_efficientnet_lite0"),
    "timm_mnasnet_small": _timm("mnasnet_small"),
    "timm_semnasnet_050": _timm("semnasnet_050"),
    "timm_lcnet_050": _timm("lcnet_050"),
    "timm_rexnet_100": _timm("rexnet_100"),
    "timm_mobilevit_xxs": _timm("mobilevit_xxs"),
    "timm_efficientvit_b0": _timm("efficientvit_b0"),
    "timm_resnet10t": _timm("resnet10t"),
    "timm_regnetx_002": _timm("regnetx_002"),
    "timm_regnety_002": _timm("regnety_002"),
    "timm_ghostnet_050": _timm("ghostnet_050"),
    "timm_mixnet_s": _timm("mixnet_s"),
    "timm_fbnetc_100": _timm("fbnetc_100"),
    "timm_spnasnet_100": _timm("spnasnet_100"),
    "timm_tinynet_e": _timm("tinynet_e"),
    "timm_dla46_c": _timm("dla46_c"),
    "timm_vit_tiny": _timm("vit_tiny_patch16_224", img_size=32, patch_size=4, depth=2),
    "timm_deit_tiny": _timm("deit_tiny_patch16_224", img_size=32, patch_size=4, depth=2),
    "timm_convnext_atto": _timm("convnext_atto"),
    "timm_edgenext_xx_small": _timm("edgenext_xx_small"),
    "timm_gernet_s": _timm("gernet_s"),
    "timm_efficientformerv2_s0": _timm("efficientformerv2_s0", img_size=32),
    "timm_mobilenetv4_conv_small": _timm("mobilenetv4_conv_small"),
    "timm_ese_vovnet19b_slim": _timm("ese_vovnet19b_slim"),
    "timm_mobilevitv2_050": _timm("mobilevitv2_050"),
    "timm_resnest14d": _timm("resnest14d"),
    "timm_skresnet18": _timm("skresnet18"),
    "timm_hgnetv2_b0": _timm("hgnetv2_b0"),
    "timm_inception_next_atto": _timm("inception_next_atto"),
    "timm_starnet_s050": _timm("starnet_s050"),
    "timm_poolformerv2_s12": _timm("poolformerv2_s12"),
    "timm_cs3darknet_focus_s": _timm("cs3darknet_focus_s"),
    "timm_dla_simple": _timm("dla34"),
    "timm_levit_128s": _timm("levit_128s", img_size=32),
    "timm_xcit_nano": _timm("xcit_nano_12_p8_224", img_size=32, depth=2),
    "timm_pit_ti": _timm("pit_ti_224", img_size=32),
    "timm_convmixer_small": "",  # filled below (a hand-sized ConvMixer)
}
TIMM["timm_convmixer_small"] = (
    "from timm.models.convmixer import ConvMixer\n\n\ndef build_model():\n"
    "    return ConvMixer(dim=64, depth=2, kernel_size=5, patch_size=2, num_classes=10)\n"
)

STUDENT = {
    "student_sequential_cnn": """
        from torch import nn


        def build_model():
            return nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
            )
    """,
    "student_functional_forward": """
        import torch.nn.functional as F
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
                self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
                self.fc1 = nn.Linear(320, 50)
                self.fc2 = nn.Linear(50, 10)

            def forward(self, x):
                x = F.relu(F.max_pool2d(self.conv1(x), 2))
                x = F.relu(F.max_pool2d(self.conv2(x), 2))
                x = x.view(-1, 320)
                x = F.dropout(F.relu(self.fc1(x)), training=self.training)
                return F.log_softmax(self.fc2(x), dim=1)


        def build_model():
            return Net()
    """,
    "student_batchnorm_dropout": """
        from torch import nn


        def block(cin, cout):
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True), nn.Dropout2d(0.1), nn.MaxPool2d(2),
            )


        def build_model():
            return nn.Sequential(
                block(3, 16), block(16, 32), block(32, 64), nn.Flatten(),
                nn.Dropout(0.5), nn.Linear(64 * 4 * 4, 128), nn.BatchNorm1d(128),
                nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(128, 10),
            )
    """,
    "student_registered_buffer": """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("mean", torch.tensor([0.49, 0.48, 0.45]).view(1, 3, 1, 1))
                self.register_buffer("std", torch.tensor([0.25, 0.24, 0.26]).view(1, 3, 1, 1))
                self.body = nn.Sequential(
                    nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                    nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
                )

            def forward(self, x):
                return self.body((x - self.mean) / self.std)


        def build_model():
            return Net()
    """,
    "student_weight_tying": """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.encode = nn.Linear(784, 64)
                self.decode = nn.Linear(64, 784)
                self.decode.weight = self.encode.weight  # shared, stored once
                self.head = nn.Linear(64, 10)

            def forward(self, x):
                h = torch.relu(self.encode(x.flatten(1)))
                back = torch.nn.functional.linear(h, self.decode.weight.t())
                return self.head(h) + back.mean(1, keepdim=True)


        def build_model():
            return Net()
    """,
    "student_lazy_modules": """
        from torch import nn


        def build_model():
            return nn.Sequential(
                nn.LazyConv2d(16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.LazyConv2d(32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.LazyLinear(64), nn.ReLU(), nn.LazyLinear(10),
            )
    """,
    "student_lstm_rows": """
        from torch import nn


        class RowLSTM(nn.Module):
            \"\"\"Reads an MNIST image row by row (the classic RNN exercise).\"\"\"

            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(28, 64, num_layers=2, batch_first=True)
                self.fc = nn.Linear(64, 10)

            def forward(self, x):
                out, _ = self.lstm(x.squeeze(1))
                return self.fc(out[:, -1, :])


        def build_model():
            return RowLSTM()
    """,
    "student_gru_rows": """
        from torch import nn


        class RowGRU(nn.Module):
            def __init__(self):
                super().__init__()
                self.gru = nn.GRU(28, 48, batch_first=True, bidirectional=True)
                self.fc = nn.Linear(96, 10)

            def forward(self, x):
                out, _ = self.gru(x.squeeze(1))
                return self.fc(out.mean(1))


        def build_model():
            return RowGRU()
    """,
    "student_transformer_encoder": """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.embed = nn.Linear(28, 32)
                self.pos = nn.Parameter(torch.zeros(1, 28, 32))
                layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True)
                self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
                self.fc = nn.Linear(32, 10)

            def forward(self, x):
                h = self.encoder(self.embed(x.squeeze(1)) + self.pos)
                return self.fc(h.mean(1))


        def build_model():
            return Net()
    """,
    "student_vit_unfold": """
        import torch
        from torch import nn


        class ViT(nn.Module):
            \"\"\"Patches cut by hand with Tensor.unfold, a class token, attention blocks.\"\"\"

            def __init__(self, patch=4, dim=48):
                super().__init__()
                self.patch = patch
                self.proj = nn.Linear(3 * patch * patch, dim)
                self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
                self.pos = nn.Parameter(torch.randn(1, 1 + (32 // patch) ** 2, dim) * 0.02)
                self.blocks = nn.ModuleList(
                    nn.ModuleDict({
                        "norm1": nn.LayerNorm(dim),
                        "attn": nn.MultiheadAttention(dim, 4, batch_first=True),
                        "norm2": nn.LayerNorm(dim),
                        "mlp": nn.Sequential(
                            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
                        ),
                    })
                    for _ in range(2)
                )
                self.head = nn.Linear(dim, 10)

            def forward(self, x):
                p = self.patch
                patches = x.unfold(2, p, p).unfold(3, p, p)  # N, C, H/p, W/p, p, p
                patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], -1, 3 * p * p)
                h = self.proj(patches)
                h = torch.cat([self.cls.expand(x.shape[0], -1, -1), h], dim=1) + self.pos
                for b in self.blocks:
                    y = b["norm1"](h)
                    h = h + b["attn"](y, y, y, need_weights=False)[0]
                    h = h + b["mlp"](b["norm2"](h))
                return self.head(h[:, 0])


        def build_model():
            return ViT()
    """,
    "student_spatial_transformer": """
        import torch
        import torch.nn.functional as F
        from torch import nn


        class STN(nn.Module):
            \"\"\"PyTorch's spatial transformer tutorial network.\"\"\"

            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
                self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
                self.fc1 = nn.Linear(320, 50)
                self.fc2 = nn.Linear(50, 10)
                self.localization = nn.Sequential(
                    nn.Conv2d(1, 8, kernel_size=7), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                    nn.Conv2d(8, 10, kernel_size=5), nn.MaxPool2d(2, stride=2), nn.ReLU(True),
                )
                self.fc_loc = nn.Sequential(nn.Linear(10 * 3 * 3, 32), nn.ReLU(True),
                                            nn.Linear(32, 3 * 2))

            def stn(self, x):
                xs = self.localization(x).view(-1, 10 * 3 * 3)
                theta = self.fc_loc(xs).view(-1, 2, 3)
                grid = F.affine_grid(theta, x.size(), align_corners=False)
                return F.grid_sample(x, grid, align_corners=False)

            def forward(self, x):
                x = self.stn(x)
                x = F.relu(F.max_pool2d(self.conv1(x), 2))
                x = F.relu(F.max_pool2d(self.conv2(x), 2))
                x = F.relu(self.fc1(x.view(-1, 320)))
                return F.log_softmax(self.fc2(x), dim=1)


        def build_model():
            return STN()
    """,
    "student_float_cast": """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(1, 8, 3, stride=2)
                self.fc = nn.Linear(8 * 13 * 13, 10)

            def forward(self, x):
                x = x.float()  # torch.export emits aten._assert_tensor_metadata (no output)
                h = torch.relu(self.conv(x.to(torch.float32)))
                return self.fc(h.flatten(1)).to(dtype=torch.float32)


        def build_model():
            return Net()
    """,
    "student_one_minus_sigmoid": """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(784, 64)
                self.fc2 = nn.Linear(64, 10)

            def forward(self, x):
                x = 1 - x  # inverted digits: aten.rsub.Scalar
                gate = 1 - torch.sigmoid(self.fc1(x.flatten(1)))
                return self.fc2(gate)


        def build_model():
            return Net()
    """,
    "student_relu6_inplace": """
        from torch import nn


        def build_model():
            return nn.Sequential(
                nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16),
                nn.ReLU6(inplace=True),
                nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.Hardswish(inplace=True),
                nn.Conv2d(32, 32, 3, padding=1), nn.SiLU(inplace=True),
                nn.Conv2d(32, 32, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2, inplace=True),
                nn.Linear(32, 10),
            )
    """,
    "student_autocast_block": """
        import torch
        from torch import nn


        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv = nn.Conv2d(3, 16, 3, stride=2, padding=1)
                self.fc = nn.Linear(16, 10)

            def forward(self, x):
                h = torch.relu(self.conv(x)).mean((2, 3))
                with torch.autocast("cpu", enabled=False):  # timm EfficientViT does this
                    h = torch.softmax(h.float(), dim=-1) * 16
                return self.fc(h)


        def build_model():
            return Net()
    """,
}

MNIST_STUDENTS = {
    "student_sequential_cnn",
    "student_functional_forward",
    "student_weight_tying",
    "student_lazy_modules",
    "student_lstm_rows",
    "student_gru_rows",
    "student_transformer_encoder",
    "student_spatial_transformer",
    "student_float_cast",
    "student_one_minus_sigmoid",
}


def entries() -> list[Entry]:
    out = [Entry(n, s, "cifar", "torchvision") for n, s in TORCHVISION.items()]
    out += [Entry(n, s, "cifar", "timm") for n, s in TIMM.items()]
    out += [
        Entry(
            n, textwrap.dedent(s).lstrip(), "mnist" if n in MNIST_STUDENTS else "cifar", "student"
        )
        for n, s in STUDENT.items()
    ]
    return out
