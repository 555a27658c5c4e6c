"""Forward+backward time and peak memory of each plug-in module at its real preset shapes (CPU, fp32):
regression checks of vpgkit's modules against reference formulations of the same weights.

* Perceiver and gated cross-attention block: a plain reference formulation — explicit einsum attention
  with the mask materialised as a tensor, the way the original Flamingo/OpenFlamingo code computes it.
* Q-Former: the same weights with transformers' eager attention (explicit softmax, as LAVIS' BERT
  computes it) instead of SDPA.
* VPG-C through the frozen Q-Former: reusing the prompt pass's image-side keys/values
  (:class:`vpgkit.modules.ImageKV`) against recomputing them in VPG-C's pass (the original code).

Each pair is timed alternately (background load hits both alike), outputs are compared, and the check is
``speedup ≥ 1.0`` at equal outputs (``max_abs_diff`` within float rounding). Writes
``results/modules.json``; ``--readme`` renders its block in benchmarks/README.md.

    python benchmarks/modules.py              # real preset shapes, batch 2
    python benchmarks/modules.py --text 256   # shorter text for the gated block
    python benchmarks/modules.py --readme
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import write_block
from measure import median_ms, peak_rss_increase_mib, reexec_with_exact_rss
from results_file import write_results

from vpgkit.modules import (
    VPGC,
    GatedCrossAttentionBlock,
    GatedCrossAttentionConfig,
    PerceiverConfig,
    PerceiverResampler,
    QFormer,
    QFormerConfig,
    VPGCConfig,
    media_attention_mask,
)
from vpgkit.modules.perceiver import PerceiverAttention
from vpgkit.modules.xattn import MaskedCrossAttention

IMAGE = 32000  # <image> id in the benchmark's token ids
ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "modules.json"
EQUAL_TOL = 1e-4  # max |ours − reference| for "equal outputs" (fp32 rounding of reordered sums)

# --- reference formulations (same weights, the original papers' style of computation) -----------------


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    return t.reshape(*t.shape[:-1], heads, -1).transpose(-2, -3)


def _merge(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(-2, -3).flatten(-2)


def reference_perceiver_attention(a: PerceiverAttention, media: torch.Tensor, latents: torch.Tensor):
    media, latents = a.norm_media(media), a.norm_latents(latents)
    q = _heads(a.to_q(latents), a.heads)
    k, v = (_heads(t, a.heads) for t in a.to_kv(torch.cat((media, latents), dim=-2)).chunk(2, dim=-1))
    sim = torch.einsum("bhid,bhjd->bhij", q * q.shape[-1] ** -0.5, k)
    attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
    return a.to_out(_merge(torch.einsum("bhij,bhjd->bhid", attn, v)))


def reference_perceiver(m: PerceiverResampler, media: torch.Tensor) -> torch.Tensor:
    b, t, f, n, d = media.shape
    x = media.reshape(b * t, f * n, d)
    latents = m.latents.repeat(b * t, 1, 1)
    for attn, ff in m.layers:
        latents = reference_perceiver_attention(attn, x, latents) + latents
        latents = ff(latents) + latents
    return m.norm(latents).reshape(b, t, -1, d)


def reference_masked_xattn(a: MaskedCrossAttention, x, media, media_locations, only_immediate=True):
    b, t_img, n, _ = media.shape
    q = _heads(a.to_q(a.norm(x)), a.heads)
    k, v = (_heads(t, a.heads) for t in a.to_kv(media.reshape(b, t_img * n, -1)).chunk(2, dim=-1))
    sim = torch.einsum("bhid,bhjd->bhij", q * q.shape[-1] ** -0.5, k)
    text_time = media_locations.cumsum(dim=-1)  # (B, T_txt)
    media_time = torch.arange(1, t_img + 1).repeat_interleave(n)  # (T_img·N,)
    compare = torch.eq if only_immediate else torch.ge
    mask = compare(text_time[:, None, :, None], media_time[None, None, None, :])  # (B, 1, T_txt, T_img·N)
    sim = sim.masked_fill(~mask, -torch.finfo(sim.dtype).max)
    attn = (sim - sim.amax(dim=-1, keepdim=True).detach()).softmax(dim=-1)
    attn = attn.masked_fill((text_time == 0)[:, None, :, None], 0.0)
    return a.to_out(_merge(torch.einsum("bhij,bhjd->bhid", attn, v)))


def reference_block(block: GatedCrossAttentionBlock, x, media, media_locations):
    x = reference_masked_xattn(block.attn, x, media, media_locations) * block.attn_gate.tanh() + x
    return block.ff(x) * block.ff_gate.tanh() + x


# --- measurement ---------------------------------------------------------------------------------------


def step(module: torch.nn.Module, forward):
    """One forward + backward (mean-square loss); gradients are freed afterwards so that each call starts
    from the same memory and its peak includes the gradient buffers."""

    def run():
        forward().square().mean().backward()
        module.zero_grad(set_to_none=True)

    return run


def compare(name: str, module, ours, reference, repeat: int, reference_module=None) -> list[dict]:
    """Rows for our formulation and the reference one of the same module, with diff and speed ratio.

    The two are timed alternately, so that load from other processes hits both alike. ``reference_module``
    holds the reference's weights when they are a copy (default: ``module``)."""
    with torch.no_grad():
        diff = (ours() - reference()).abs().max().item()
    runs = {"ours": step(module, ours), "reference": step(reference_module or module, reference)}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeat):
        for key, run in runs.items():
            times[key].append(median_ms(run, repeat=1, warmup=0 if times[key] else 1))
    ms = {k: statistics.median(v) for k, v in times.items()}
    return [
        {
            "module": name,
            "fwd+bwd ms": ms["ours"],
            "peak MiB": peak_rss_increase_mib(runs["ours"]),
            "max_abs_diff": diff,
            "speedup": ms["reference"] / ms["ours"],
            "check": "ok" if diff <= EQUAL_TOL and ms["reference"] >= ms["ours"] else "FAIL",
        },
        {
            "module": name + ", reference",
            "fwd+bwd ms": ms["reference"],
            "peak MiB": peak_rss_increase_mib(runs["reference"]),
        },
    ]


def bench_qformer_and_vpgc(b: int, repeat: int) -> list[dict]:
    """Q-Former VPG on EVA-CLIP-g features (257 × 1408, one image) against the same weights with eager
    attention; then VPG-C through it, frozen, reusing the image-side keys/values against recomputing them."""
    vpg = QFormer(QFormerConfig.preset("blip2")).eval()
    eager = QFormer(QFormerConfig.preset("blip2", attn_implementation="eager")).eval()
    eager.load_state_dict(vpg.state_dict())
    vision = torch.randn(b, 1, 257, 1408)
    rows = compare(
        "QFormer blip2", vpg, lambda: vpg(vision).prompts, lambda: eager(vision).prompts, repeat, eager
    )
    vpg.requires_grad_(False)
    vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("vicuna7b"))
    with torch.no_grad():
        vpgc.output_proj.weight.normal_(std=0.02)  # non-zero so the backward reaches every weight
        image_kv = vpg(vision, return_image_kv=True).image_kv  # what the prompt pass leaves in the context
    guidance = torch.randn(b, 4096)
    return rows + compare(
        "VPGC vicuna7b (frozen Q-Former)",
        vpgc,
        lambda: vpgc(guidance, vision, vpg, image_kv=image_kv),
        lambda: vpgc(guidance, vision, vpg),
        repeat,
    )


def bench_perceiver(b: int, t_img: int, repeat: int) -> list[dict]:
    """OpenFlamingo-9B resampler on ViT-L/14 patch tokens (256 × 1024 per image)."""
    resampler = PerceiverResampler(PerceiverConfig.preset("openflamingo9b"))
    media = torch.randn(b, t_img, 1, 256, 1024)
    rows = compare(
        "PerceiverResampler openflamingo9b",
        resampler,
        lambda: resampler(media),
        lambda: reference_perceiver(resampler, media),
        repeat,
    )
    layer, latents = resampler.layers[0][0], resampler.latents.expand(b * t_img, -1, -1)
    flat = media.reshape(b * t_img, 256, 1024)
    return rows + compare(
        "  attention sublayer",
        layer,
        lambda: layer(flat, latents),
        lambda: reference_perceiver_attention(layer, flat, latents),
        repeat,
    )


def bench_gated_block(b: int, t_img: int, text: int, repeat: int) -> list[dict]:
    """OpenFlamingo-9B gated block: LLaMA-7B text (4096) attending to Perceiver latents (64 × 1024)."""
    block = GatedCrossAttentionBlock(GatedCrossAttentionConfig.preset("openflamingo9b"))
    with torch.no_grad():
        block.attn_gate.fill_(0.5)
        block.ff_gate.fill_(0.5)
    ids = torch.randint(0, IMAGE, (b, text))
    for row in range(b):  # images at different places per row; some text precedes the first image
        ids[row, torch.linspace(8 + 8 * row, text - 16, t_img).long()] = IMAGE
    locations = ids == IMAGE
    mask = media_attention_mask(ids, IMAGE, num_images=t_img)
    x, latents = torch.randn(b, text, 4096), torch.randn(b, t_img, 64, 1024)
    rows = compare(
        "GatedCrossAttentionBlock openflamingo9b",
        block,
        lambda: block(x, latents, mask),
        lambda: reference_block(block, x, latents, locations),
        repeat,
    )
    attn = block.attn
    return rows + compare(
        "  attention sublayer",
        attn,
        lambda: attn(x, latents, mask),
        lambda: reference_masked_xattn(attn, x, latents, locations),
        repeat,
    )


def main() -> None:
    reexec_with_exact_rss()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--images", type=int, default=3, help="images per sample (Perceiver, gated block)")
    parser.add_argument("--text", type=int, default=512, help="text tokens per sample for the gated block")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="only rewrite benchmarks/README.md's block")
    args = parser.parse_args()
    if args.readme:
        write_block(ROOT / "README.md", "modules", readme_block(json.loads(args.out.read_text())))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    torch.manual_seed(0)
    rows = bench_qformer_and_vpgc(args.batch, args.repeat)
    rows += bench_perceiver(args.batch, args.images, args.repeat)
    rows += bench_gated_block(args.batch, args.images, args.text, args.repeat)
    result = {
        "command": "python benchmarks/modules.py " + " ".join(sys.argv[1:]),
        "setting": f"batch {args.batch}, {args.images} images/sample, {args.text} text tokens, fp32, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, median of {args.repeat} alternating runs",
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "equal_tolerance": EQUAL_TOL,
        "rows": rows,
        "all_checks_ok": all(r["check"] == "ok" for r in rows if "check" in r),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_results(args.out, result)
    print(readme_block(result))


def readme_block(result: dict) -> str:
    """The benchmarks/README.md block, rendered from the JSON."""
    lines = [
        f"{result['setting']}; load (1-min average) {result['load_before'][0]:.2f} → {result['load_after'][0]:.2f}.",
        "",
        "| module | fwd+bwd ms | peak MiB | max abs diff | speedup vs reference | check (≥ 1.0× at equal outputs) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["rows"]:
        if "speedup" in r:
            lines.append(
                f"| {r['module'].strip()} | {r['fwd+bwd ms']:.1f} | {r['peak MiB']:.0f} | {r['max_abs_diff']:.1e} "
                f"| {r['speedup']:.2f} | {r['check']} |"
            )
        else:
            lines.append(f"| {r['module'].strip()} | {r['fwd+bwd ms']:.1f} | {r['peak MiB']:.0f} | | | |")
    lines += ["", f"All checks ok: **{result['all_checks_ok']}**. Command: `{result['command']}`."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
