#!/usr/bin/env python3
"""PyTorch reference timings for the shapes `bench_unet` measures (issue 4's comparison).

Builds the SD1.5 / SDXL UNet and the SD VAE decoder with diffusers' modules (random weights:
the values do not change the work) and times them on the CPU in float32 with torch's
scaled-dot-product attention, as ComfyUI `--cpu` runs them:

    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch diffusers
    /tmp/tv/bin/python scripts/bench_pytorch.py sd15 256 [512] [--threads 2] [--repeat 2]
    /tmp/tv/bin/python scripts/bench_pytorch.py sdxl 256

Prints, per size, the first call (cold, like `bench_unet`) and the best of the repeats, as
wall and process-CPU seconds, for one UNet call at batch 2 (one CFG step) and one VAE decode
at batch 1.
"""

import argparse
import resource
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel


def sd15_unet():
    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8,
    ), 768, None


def sdxl_unet():
    return UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
        cross_attention_dim=2048, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    ), 2048, 1280


def sd_vae():
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
    )


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("arch", choices=["sd15", "sdxl"])
    ap.add_argument("sizes", nargs="*", type=int, default=[256])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--no-vae", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    unet, ctx_dim, pooled = (sd15_unet if args.arch == "sd15" else sdxl_unet)()
    unet = unet.eval()
    vae = None if args.no_vae else sd_vae().eval()
    print(f"{args.arch}: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"float32, build {time.perf_counter() - t0:.1f}s")

    with torch.inference_mode():
        for size in args.sizes:
            lat = size // 8
            x = torch.randn(2, 4, lat, lat)
            t = torch.tensor([999.0, 999.0])
            ctx = torch.randn(2, 77, ctx_dim)
            extra = {}
            if pooled is not None:
                extra = {"added_cond_kwargs": {
                    "text_embeds": torch.randn(2, pooled),
                    "time_ids": torch.tensor([[size, size, 0, 0, size, size]] * 2, dtype=torch.float32),
                }}
            runs = [timed(lambda: unet(x, t, encoder_hidden_states=ctx, **extra))
                    for _ in range(args.repeat)]
            best = min(runs)
            print(f"UNet {size}x{size} batch 2 (one CFG step): first wall {runs[0][0]:.2f}s "
                  f"cpu {runs[0][1]:.1f}s; best wall {best[0]:.2f}s cpu {best[1]:.1f}s")
            if vae is not None:
                z = torch.randn(1, 4, lat, lat)
                runs = [timed(lambda: vae.decode(z)) for _ in range(args.repeat)]
                best = min(runs)
                print(f"VAE decode {size}x{size}: first wall {runs[0][0]:.2f}s "
                      f"cpu {runs[0][1]:.1f}s; best wall {best[0]:.2f}s cpu {best[1]:.1f}s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak RSS {peak} kB")


if __name__ == "__main__":
    main()
