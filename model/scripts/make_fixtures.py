#!/usr/bin/env python3
"""Regenerate glimpse-model's parity fixtures from torchvision (developers only).

CI never runs this: it needs torch, torchvision and Pillow from PyPI
(`pip install torch torchvision pillow`). Everything it writes is committed under
model/tests/fixtures/ and is read by model/tests/parity.rs without Python or the internet.

What it writes:
- googlenet-fixture.pth: torchvision's googlenet(aux_logits=True, transform_input=True) state
  dict with seeded, non-trivial weights and perturbed BatchNorm running statistics, in
  torchvision's key layout. Values are rounded to float16 and stored as float16 so the file
  fits the 16 MiB fixture budget; the expected outputs below are computed in float32 from the
  *rounded* weights, so the rounding costs no parity. The aux1/aux2 convolution and BatchNorm
  keys are kept (the loader must ignore them) but their large fc layers are dropped for size.
- expected.pth: a flat dict of tensors:
    inputs [2,3,224,224] f16 and logits [2,1000] f32 (one forward pass, batch of 2);
    image.<name>.tensor [3,224,224] f16: GoogLeNet_Weights.IMAGENET1K_V1.transforms() of the
      image file as PIL opens it (EXIF orientation applied, converted to RGB);
    image.<name>.logits [1000] f32 and image.<name>.top5 [5] i64 for that tensor.
- images/*.{jpg,png}: deterministic generated images of different sizes and aspect ratios.
- broken-shape.pth / broken-missing.pth: tiny foreign checkpoints for the error tests.
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image, ImageDraw, ImageOps
from torchvision.models import GoogLeNet_Weights

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures")
SEED = 20261126


def build_model():
    torch.manual_seed(SEED)
    model = torchvision.models.googlenet(
        weights=None, aux_logits=True, transform_input=True, init_weights=True
    )
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
            elif isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                module.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                module.num_batches_tracked.fill_(1000)
            elif isinstance(module, nn.Linear):
                # 3x the usual scale: wider logits make the 1e-3 parity bound stricter.
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 3.0 / math.sqrt(module.in_features))
                module.bias.copy_(torch.randn(module.bias.shape, generator=gen) * 0.1)
        # Round every floating-point parameter and buffer to float16 and back, so the file
        # can be stored as float16 and the float32 reference uses exactly those values.
        for tensor in list(model.parameters()) + list(model.buffers()):
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().float())
    model.eval()
    return model


def save_weights(model):
    state = model.state_dict()
    kept = {}
    for key, value in state.items():
        if key.startswith(("aux1.fc", "aux2.fc")):
            continue  # too large for the fixture budget; the conv keys still exercise "ignore aux"
        kept[key] = value.half() if value.is_floating_point() else value
    assert any(k.startswith("aux1.") for k in kept) and any(k.startswith("aux2.") for k in kept)
    torch.save(kept, os.path.join(OUT, "googlenet-fixture.pth"))
    # Foreign checkpoints for the error tests: a wrong shape, and a missing tensor.
    wrong = {"conv1.conv.weight": torch.zeros(32, 3, 3, 3)}
    torch.save(wrong, os.path.join(OUT, "broken-shape.pth"))
    missing = {k: v for k, v in list(kept.items())[:12]}
    torch.save({k: v for k, v in missing.items() if v.dim() <= 1}, os.path.join(OUT, "broken-missing.pth"))


def make_images():
    """Deterministic images: gradients plus shapes, different sizes and aspect ratios."""
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    rng = np.random.default_rng(SEED)
    specs = [
        # name, size (w, h), format, mode, exif orientation
        ("landscape.jpg", (640, 427), "JPEG", "RGB", None),
        ("portrait-alpha.png", (300, 517), "PNG", "RGBA", None),
        ("small-gray.png", (150, 212), "PNG", "L", None),
        ("wide-rotated.jpg", (900, 260), "JPEG", "RGB", 6),
    ]
    names = []
    for index, (name, (w, h), fmt, mode, orientation) in enumerate(specs):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        r = 255 * (x / w)
        g = 255 * (y / h)
        b = 127 + 127 * np.sin((x + 2 * y) / (17 + 5 * index))
        arr = np.stack([r, g, b], axis=-1)
        arr += rng.normal(0, 6, arr.shape)
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w - 20)), int(rng.integers(0, h - 20))
            x1, y1 = x0 + int(rng.integers(10, w // 2)), y0 + int(rng.integers(10, h // 2))
            color = tuple(int(c) for c in rng.integers(0, 256, 3))
            if rng.random() < 0.5:
                draw.ellipse([x0, y0, x1, y1], fill=color)
            else:
                draw.rectangle([x0, y0, x1, y1], fill=color)
        if mode == "RGBA":
            alpha = Image.fromarray((255 * (x / w)).astype(np.uint8), "L")
            img = img.convert("RGBA")
            img.putalpha(alpha)
        elif mode == "L":
            img = img.convert("L")
        path = os.path.join(OUT, "images", name)
        if fmt == "JPEG":
            kwargs = {"quality": 90}
            if orientation is not None:
                exif = Image.Exif()
                exif[0x0112] = orientation
                kwargs["exif"] = exif.tobytes()
            img.save(path, "JPEG", **kwargs)
        else:
            img.save(path, "PNG")
        names.append(name)
    return names


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    model = build_model()
    save_weights(model)
    expected = {}
    gen = torch.Generator().manual_seed(SEED + 1)
    inputs = torch.randn(2, 3, 224, 224, generator=gen)
    inputs[1] = inputs[1] * 0.5 + 0.3
    inputs = inputs.half().float()  # stored as float16 (fixture budget); exact in float32
    with torch.inference_mode():
        logits = model(inputs)
    expected["inputs"] = inputs.half()
    expected["logits"] = logits.float()
    print("logit range", float(logits.min()), float(logits.max()))

    transform = GoogLeNet_Weights.IMAGENET1K_V1.transforms()
    for name in make_images():
        with Image.open(os.path.join(OUT, "images", name)) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            tensor = transform(img)
        tensor16 = tensor.half()
        with torch.inference_mode():
            out = model(tensor16.float().unsqueeze(0))[0]
        top = torch.topk(out, 6)
        margin = float(top.values[0] - top.values[1])
        print(f"{name}: size {img.size} top5 {top.indices[:5].tolist()} top1-top2 margin {margin:.3f}")
        if margin < 0.05:
            print("warning: top-1 margin is small", file=sys.stderr)
        expected[f"image.{name}.tensor"] = tensor16
        expected[f"image.{name}.logits"] = out.float()
        expected[f"image.{name}.top5"] = top.indices[:5].to(torch.int64)
    torch.save(expected, os.path.join(OUT, "expected.pth"))

    total = 0
    for root, _, files in os.walk(OUT):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    print(f"fixtures total {total / 2**20:.2f} MiB")
    assert total <= 16 * 2**20, "fixture budget is 16 MiB"


if __name__ == "__main__":
    main()
