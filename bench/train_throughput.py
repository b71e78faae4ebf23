"""Training throughput of prune_core's loop against a plain torchvision-style loop, side by side.

Both train the same model on the same images with the same batch size and optimizer for the same
number of steps, in one process, alternating rounds so machine noise hits both alike:

- baseline: a ``Dataset`` of PIL images with per-sample ``transforms`` (random crop with padding,
  ``ToTensor``, ``Normalize``), a ``DataLoader``, fp32, default memory format;
- ours: ``prune_core.data`` (uint8 tensors on the device, batched augmentation) and
  ``prune_core.train.fit`` (AMP and channels_last on CUDA).

    python bench/train_throughput.py                 # resnet20 on mnist5k, CPU
    python bench/train_throughput.py --device cuda --model resnet18 --steps 100

Goal (issue): ours >= 1.5x the baseline on a 2-core CPU, >= 3x on a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from prune_core.config import ExperimentConfig
from prune_core.data import load_data
from prune_core.models import build_model
from prune_core.train import fit


class PilDigits(Dataset):
    """What a typical torchvision script does: one PIL image and one transform call per sample."""

    def __init__(self, loader, mean, std, crop: int, pad: int):
        xs, ys = [], []
        for x, y in loader:  # un-normalise back to uint8 pixels so both loops see the same data
            pix = (x.cpu() * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)) * 255
            xs.append(pix.round().clamp(0, 255).to(torch.uint8).cpu())
            ys.append(y.cpu())
        self.x, self.y = torch.cat(xs), torch.cat(ys)
        from PIL import Image

        self.images = [Image.fromarray(img.permute(1, 2, 0).squeeze(-1).numpy()) for img in self.x]
        self.tf = transforms.Compose([transforms.RandomCrop(crop, padding=pad), transforms.ToTensor(),
                                      transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.tf(self.images[i]), int(self.y[i])


def baseline_steps(model, loader, device, steps: int) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    done, t0 = 0, time.perf_counter()
    while done < steps:
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def ours_steps(model, cfg, data, device, steps: int, cpu_bf16: bool = False) -> float:
    tcfg = cfg.train.__class__(**{**cfg.train.__dict__, "epochs": 1, "max_steps": steps, "lr": 0.01})
    t0 = time.perf_counter()
    fit(model, tcfg, _NoVal(data), device=device, amp=True, cpu_bf16=cpu_bf16)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


class _NoVal:
    """The data with a one-batch validation split, so both loops time training steps only."""

    def __init__(self, data):
        self.train, self.num_classes = data.train, data.num_classes
        x, y = next(iter(data.val))
        self.val = [(x[:1], y[:1])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="resnet20")
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="baseline DataLoader workers")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    cfg = ExperimentConfig.from_dict({"data.name": args.dataset, "data.batch_size": args.batch_size,
                                      "model.name": args.model})
    data = load_data(cfg.data, device, 0)
    c, h, _ = data.input_shape
    crop_pad = 2 if h <= 28 else 4
    plain = PilDigits(data.train.unaugmented(), data.mean, data.std, h, crop_pad)
    loader = DataLoader(plain, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=args.workers > 0)
    torch.manual_seed(0)
    model_a = build_model(args.model, data.num_classes, c, h).to(device)
    model_b = build_model(args.model, data.num_classes, c, h).to(device)
    baseline_steps(model_a, loader, device, 2)  # warm-up: workers start, kernels load
    ours_steps(model_b, cfg, data, device, 2)
    model_c = build_model(args.model, data.num_classes, c, h).to(device)
    bf16 = device.type == "cpu"  # the optional runtime.cpu_bf16 path; CUDA already runs AMP
    base_t, ours_t, bf16_t = [], [], []
    for _ in range(args.rounds):
        base_t.append(baseline_steps(model_a, loader, device, args.steps))
        ours_t.append(ours_steps(model_b, cfg, data, device, args.steps))
        if bf16:
            bf16_t.append(ours_steps(model_c, cfg, data, device, args.steps, cpu_bf16=True))
    images = args.steps * args.batch_size
    base_ips, ours_ips = images / statistics.median(base_t), images / statistics.median(ours_t)
    print(f"{args.model} on {args.dataset}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, "
          f"{device} ({torch.get_num_threads()} threads)")
    print(f"{'loop':<40} {'images/s':>10}")
    print(f"{'torchvision-style (PIL, DataLoader, fp32)':<40} {base_ips:>10.0f}")
    print(f"{'prune_core (tensor data, batched aug)':<40} {ours_ips:>10.0f}")
    if bf16:
        bf16_ips = images / statistics.median(bf16_t)
        print(f"{'prune_core + runtime.cpu_bf16':<40} {bf16_ips:>10.0f}")
    print(f"ratio ours/baseline: {ours_ips / base_ips:.2f}x (goal >= 1.5x on CPU, >= 3x on GPU)")
    if bf16:
        print(f"ratio ours with runtime.cpu_bf16/baseline: {bf16_ips / base_ips:.2f}x")


if __name__ == "__main__":
    main()
