"""One VPG-C training step (forward + backward + AdamW): vpgkit's recommended configuration against the
research design (Cheetah's own code, as it runs), in one process on the same weights and batches.

* **research design** — what Cheetah's training step does (read from its code; docs/model.md): the frozen
  ViT and Q-Former run on the pixels every step, the ViT in half precision (bf16 here: the CPU's half
  type), the Q-Former, its projection and the adapter in fp32, the LLM's weights in half precision, all
  under autocast; the frozen Q-Former stays in **train mode** (dropout 0.1 on, as the original leaves
  it); the LM returns the **full (B, L, V) logits** and takes the loss from them; the input embeddings
  do not require grad, so no graph is recorded below the VPG-C layer there either.
* **vpgkit** — the recommended configuration: frozen backbones stored in bf16 once (no autocast, no
  per-call casts), vision features read from the frozen-feature cache (:class:`vpgkit.data.FeatureCache`,
  one safetensors read per step), frozen Q-Former in eval mode, VPG-C's second Q-Former pass reusing the
  prompt pass's image-side cross-attention keys/values (:class:`vpgkit.modules.ImageKV`), LM head only at
  labelled positions (``loss_only``). Adapter weights and AdamW state in fp32.
* **vpgkit bf16, K/V recomputed** — the same, with VPG-C's pass recomputing the keys/values (what this one
  change gains; its gradients must be bitwise those of vpgkit bf16).
* ``--compile``: also vpgkit bf16 with every LLM decoder layer through ``torch.compile`` (the VPG-C hook
  stays eager); its first call (compilation) is reported separately.

Both are also run entirely in fp32 (the research design without autocast), where the trainable weights'
gradients must agree exactly up to float rounding (the research design's Q-Former is put in eval mode
for that gradient pass only — train mode with dropout 0 is the same function). The bf16 rows report the
gradients' relative deviation from the fp32 research design's.

Timing: variants alternate step by step (``--repeat`` rounds) so background load hits all alike; the JSON
keeps each variant's median wall time and process-CPU time per step. The matmul share: one profiled step
of vpgkit's bf16 path gives the FLOPs of its matmuls; divided by the step's wall time and by the rate of
a 2048² bf16 GEMM measured in the same run, it is the share of the machine's GEMM rate the step reaches.

    python benchmarks/vpgc_step.py                 # mid-size, writes benchmarks/results/vpgc_step.json
    python benchmarks/vpgc_step.py --readme        # rewrites benchmarks/README.md's block from the JSON
    python benchmarks/vpgc_step.py --scale 7b      # Vicuna-7B + EVA-CLIP-g + Q-Former, random bf16 weights

``--scale 7b`` runs each LLM depth (``--layers``, default 8 16 32 decoder layers of Vicuna-7B width) and each
vision input (``--vision-inputs``: ``cache`` = features from the frozen-feature cache, no vision tower in
memory, the recommended configuration; ``pixels`` = EVA-CLIP-g in memory) in its own process, two training
steps each, and records the process's peak RSS (``VmHWM`` and ``getrusage``); a least-squares line through
peak RSS against depth gives the full 32-layer figure where 32 layers were not run. Result:
``results/vpgc_step_7b.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_blocks import write_block
from gemm_rate import gemm_gflops
from results_file import write_results

from vpgkit.backbones import EvaVisionConfig, TimmEvaEncoder
from vpgkit.backbones.language import decoder_layers, llama_7b_config
from vpgkit.data.feature_cache import FeatureCache
from vpgkit.model import VisionLanguageModel
from vpgkit.modules import VPGC, QFormer, QFormerConfig, VPGCConfig

SLOT = 31999  # image slot token id
ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "vpgc_step.json"


def mid_size_parts():
    """LLaMA 16 × 1024 (vocab 32k), EVA-style ViT 12 × 768 at 224 px, BLIP-2-width Q-Former (dropout 0.1)."""
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32000,
            hidden_size=1024,
            intermediate_size=2816,
            num_hidden_layers=16,
            num_attention_heads=16,
            max_position_embeddings=2048,
        )
    )
    vision = TimmEvaEncoder(EvaVisionConfig(width=768, depth=12, num_heads=12, mlp_dim=3072))
    vpg = QFormer(QFormerConfig(vision_width=768, llm_width=1024))  # BLIP-2's dropout 0.1
    return llm, vision, vpg, VPGCConfig(llm_width=1024, layer=8)


def make_batch(batch: int, vocab: int, n_q: int, image_size: int, prompt: int = 48, answer: int = 24):
    """Rows of: BOS, 8 text tokens, one image (n_q slots), ``prompt`` instruction tokens, ``answer`` tokens."""
    g = torch.Generator().manual_seed(0)
    text = lambda n: torch.randint(10, vocab - 1, (batch, n), generator=g)  # noqa: E731
    input_ids = torch.cat(
        [
            torch.ones(batch, 1, dtype=torch.long),
            text(8),
            torch.full((batch, n_q), SLOT),
            text(prompt + answer),
        ],
        1,
    )
    labels = torch.full_like(input_ids, -100)
    labels[:, -answer:] = input_ids[:, -answer:]
    pixels = torch.randn(batch, 1, 3, image_size, image_size, generator=g)
    return {"input_ids": input_ids, "labels": labels, "pixel_values": pixels}


class Variant:
    """One way to run the step: a model, its precision handling and how it gets its vision input."""

    def __init__(
        self,
        name: str,
        parts,
        *,
        research: bool,
        half: bool,
        cache_dir: Path | None = None,
        reuse_image_kv: bool = True,
        compile_llm: bool = False,
    ):
        self.name, self.research, self.half = name, research, half
        llm, vision, vpg, vpgc_config = copy.deepcopy(parts)
        vpgc = VPGC.from_qformer(vpg.float(), vpgc_config)  # queries copied in fp32
        torch.manual_seed(1)
        with torch.no_grad():  # non-zero adapter so that every trainable weight gets a gradient
            vpgc.output_proj.weight.normal_(std=0.02)
            vpgc.guidance_proj.weight.normal_(std=0.02)
        if half:  # research: ViT + LLM in half precision, Q-Former fp32; vpgkit: every frozen part bf16
            llm, vision = llm.to(torch.bfloat16), vision.to(torch.bfloat16)
            vpg = vpg.float() if research else vpg.to(torch.bfloat16)
        else:
            llm, vision, vpg = llm.float(), vision.float(), vpg.float()
        self.model = VisionLanguageModel(
            llm,
            vision,
            image_token_id=SLOT,
            vpg=vpg,
            vpgc=vpgc,
            # the research design recomputes the image-side keys/values in VPG-C's pass, as Cheetah's code
            reuse_image_kv=reuse_image_kv and not research,
        ).train()
        if compile_llm:  # every decoder layer through torch.compile (inductor), the VPG-C hook outside it
            for layer in decoder_layers(self.model.llm):
                layer.forward = torch.compile(layer.forward, dynamic=False)
        if research:
            self.model.vpg.qformer.train()  # frozen, but left in train mode (dropout on) as the original does
        self.cache = None
        if cache_dir is not None:
            self.cache = FeatureCache(cache_dir / name.replace(" ", "_"), encoder_fingerprint=name)
        self.optimizer = torch.optim.AdamW(
            self.model.trainable_parameters().values(), lr=1e-5, weight_decay=0.05
        )

    def fill_cache(self, batch: dict) -> None:
        """Encode the batch's images once and store them (what the first epoch does)."""
        with torch.no_grad():
            features = self.model.vision(batch["pixel_values"])
        for i, f in enumerate(features):
            self.cache.put(f"img{i}", f[0])
        self.cache.flush()

    def inputs(self, batch: dict) -> dict:
        out = {"input_ids": batch["input_ids"], "labels": batch["labels"]}
        if self.cache is not None:
            n = batch["input_ids"].shape[0]
            out["vision_features"] = torch.stack([self.cache.get(f"img{i}") for i in range(n)])[:, None]
        else:
            out["pixel_values"] = batch["pixel_values"]
        return out

    def autocast(self):
        if self.research and self.half:
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss(self, batch: dict) -> torch.Tensor:
        with self.autocast():
            return self.model(**self.inputs(batch), loss_only=not self.research).loss

    def step(self, batch: dict) -> None:
        self.loss(batch).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def gradients(self, batch: dict) -> dict[str, torch.Tensor]:
        """Trainable weights' gradients of one step, dropout off (train mode with p = 0 ≡ eval)."""
        qformer = self.model.vpg.qformer
        was_training = qformer.training
        qformer.eval()
        try:
            self.loss(batch).backward()
        finally:
            qformer.train(was_training)
        grads = {n: p.grad.detach().float().clone() for n, p in self.model.trainable_parameters().items()}
        self.model.zero_grad(set_to_none=True)
        return grads


def relative_deviation(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """max over weights of |g − g_ref| / |g_ref|."""
    return max(((grads[n] - g).norm() / g.norm()).item() for n, g in reference.items())


def matmul_profile(variant: Variant, batch: dict) -> dict:
    """FLOPs and self CPU time of the matmul ops in one profiled step, and the step's total self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        variant.step(batch)
    events = prof.key_averages()
    matmuls = {
        "aten::mm",
        "aten::addmm",
        "aten::bmm",
        "aten::baddbmm",
        "aten::_scaled_dot_product_flash_attention_for_cpu",
    }
    flops = sum(e.flops for e in events if e.key in matmuls)
    mm_us = sum(e.self_cpu_time_total for e in events if e.key in matmuls)
    total_us = sum(e.self_cpu_time_total for e in events)
    return {"matmul_gflop": flops / 1e9, "matmul_share_of_cpu_time": mm_us / total_us}


def exact_work_floor(llm: LlamaForCausalLM, layer: int, batch: dict) -> dict:
    """The matmul FLOPs no exact VPG-C step can avoid: the frozen LLM layers ``layer`` … L−1, forward and
    backward to their input, over the tokens from the first image slot on (everything below the VPG-C
    layer, and every layer on the tokens before the image, is the same every epoch and could be cached),
    plus the LM head at the answer positions. VPG-C's own Q-Former pass is left out, so this is a lower
    bound. Counted with ``torch.utils.flop_counter`` on bf16 copies of the frozen layers.
    """
    from torch.utils.flop_counter import FlopCounterMode

    first = int((batch["input_ids"][0] == SLOT).nonzero()[0])
    length = batch["input_ids"].shape[1] - first
    answers = int((batch["labels"][0] != -100).sum())
    upper = copy.deepcopy(llm).to(torch.bfloat16).requires_grad_(False)
    upper.model.layers = upper.model.layers[layer:]  # the layers at and above VPG-C's
    upper.config.num_hidden_layers = len(upper.model.layers)
    hidden = torch.randn(
        batch["input_ids"].shape[0], length, llm.config.hidden_size, dtype=torch.bfloat16, requires_grad=True
    )
    counter = FlopCounterMode(display=False)
    with counter:
        # the input embeddings stand in for layer ``layer``'s input (the embedding lookup costs no matmul)
        out = upper(inputs_embeds=hidden, logits_to_keep=answers, use_cache=False).logits
        out.float().sum().backward()
    flops = counter.get_total_flops()
    return {
        "gflop": flops / 1e9,
        "tokens_per_row": length,
        "layers": len(upper.model.layers),
        "what": f"LLM layers {layer}–{llm.config.num_hidden_layers - 1} forward + backward to their input "
        f"over the {length} tokens from the image on, LM head at {answers} answer positions",
    }


def mid_size(args) -> dict:
    load_before = os.getloadavg()
    torch.manual_seed(0)
    parts = mid_size_parts()
    batch = make_batch(args.batch, 32000, 32, 224)
    cache_dir = Path(tempfile.mkdtemp(prefix="vpgc_step_cache_"))
    variants = [
        Variant("research design fp32", parts, research=True, half=False),
        Variant("vpgkit fp32", parts, research=False, half=False, cache_dir=cache_dir),
        Variant("research design bf16", parts, research=True, half=True),
        Variant("vpgkit bf16", parts, research=False, half=True, cache_dir=cache_dir),
        # this change alone: the same configuration with VPG-C's second pass recomputing the keys/values
        Variant(
            "vpgkit bf16, K/V recomputed",
            parts,
            research=False,
            half=True,
            cache_dir=cache_dir,
            reuse_image_kv=False,
        ),
    ]
    if args.compile:
        variants.append(
            Variant(
                "vpgkit bf16, compiled LLM layers",
                parts,
                research=False,
                half=True,
                cache_dir=cache_dir,
                compile_llm=True,
            )
        )
    for v in variants:
        if v.cache is not None:
            v.fill_cache(batch)
    grads, first_call_s, compile_error = {}, {}, None
    for v in list(variants):
        started = time.perf_counter()
        try:
            grads[v.name] = v.gradients(batch)  # the compiled variant compiles here
        except Exception as err:  # torch.compile failing on this machine is a result, recorded
            if "compiled" not in v.name:
                raise
            compile_error = f"{type(err).__name__}: {str(err)[:300]}"
            variants.remove(v)
            continue
        first_call_s[v.name] = time.perf_counter() - started
    reference = grads["research design fp32"]
    for v in variants:
        v.step(batch)  # warm-up; allocates the optimiser state
    wall: dict[str, list[float]] = {v.name: [] for v in variants}
    cpu: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(args.repeat):  # alternate so that background load hits every variant alike
        for v in variants:
            c, w = time.process_time(), time.perf_counter()
            v.step(batch)
            wall[v.name].append(time.perf_counter() - w)
            cpu[v.name].append(time.process_time() - c)
    gemm = {"bfloat16": gemm_gflops(torch.bfloat16), "float32": gemm_gflops(torch.float32)}
    profile = matmul_profile(variants[-1], batch)
    floor = exact_work_floor(parts[0], parts[3].layer, batch)
    # the shortest time that work can take: every FLOP at the 2048² bf16 GEMM rate, per CPU second
    floor["ms_at_gemm_rate"] = 1e3 * floor["gflop"] / gemm["bfloat16"]["per_cpu_second"]
    rows = {}
    for v in variants:
        rows[v.name] = {
            "step_ms": 1e3 * statistics.median(wall[v.name]),
            "cpu_ms": 1e3 * statistics.median(cpu[v.name]),
            "grad_rel_dev_vs_research_fp32": relative_deviation(grads[v.name], reference),
            "first_call_s": first_call_s[v.name],
        }
    rows["vpgkit fp32"]["grad_rel_dev_vs_research_fp32_same_precision"] = rows["vpgkit fp32"].pop(
        "grad_rel_dev_vs_research_fp32"
    )
    ours_cpu = rows["vpgkit bf16"]["cpu_ms"] / 1e3
    result = {
        "command": "python benchmarks/vpgc_step.py " + " ".join(a for a in sys.argv[1:] if a != "--readme"),
        "shapes": f"LLaMA 16 × 1024 (k = 8, vocab 32k), EVA ViT 12 × 768 at 224 px, Q-Former 12 × 768; "
        f"batch {args.batch} × {batch['input_ids'].shape[1]} tokens (24 answer), 1 image per row",
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "repeat": args.repeat,
        "variants": rows,
        "speedup_bf16": rows["research design bf16"]["step_ms"] / rows["vpgkit bf16"]["step_ms"],
        "speedup_fp32": rows["research design fp32"]["step_ms"] / rows["vpgkit fp32"]["step_ms"],
        "speedup_user": rows["research design bf16"]["step_ms"] / rows["vpgkit bf16"]["step_ms"],
        "kv_reuse_speedup": rows["vpgkit bf16, K/V recomputed"]["step_ms"] / rows["vpgkit bf16"]["step_ms"],
        "kv_reuse_cpu_speedup": rows["vpgkit bf16, K/V recomputed"]["cpu_ms"] / rows["vpgkit bf16"]["cpu_ms"],
        "kv_reuse_grads_bitwise_equal": all(
            torch.equal(grads["vpgkit bf16"][n], g) for n, g in grads["vpgkit bf16, K/V recomputed"].items()
        ),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "compile_error": compile_error,
        "gemm_gflops_now": gemm,
        "vpgkit_bf16_profile": profile,
        "exact_work_floor": floor,
        # the largest speedup over the research design any exact step could reach on this machine
        "max_speedup_bf16": rows["research design bf16"]["cpu_ms"] / floor["ms_at_gemm_rate"],
        # per process-CPU second: on a shared machine the wall clock also counts other jobs' time
        "vpgkit_bf16_matmul_share_of_gemm_rate": profile["matmul_gflop"]
        / ours_cpu
        / gemm["bfloat16"]["per_cpu_second"],
    }
    return result


RESULTS_7B = ROOT / "results" / "vpgc_step_7b.json"


def peak_rss_gib() -> dict[str, float]:
    """The process's peak resident set: ``VmHWM`` of /proc and ``ru_maxrss`` of getrusage, in GiB."""
    import resource

    hwm_kib = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0])
    return {
        "vmhwm_gib": hwm_kib / 2**20,
        "ru_maxrss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def scale_7b_once(layers: int, vision_input: str) -> dict:
    """One process: Vicuna-7B width with ``layers`` decoder layers (VPG-C at k = layers // 2, as Cheetah's
    16 of 32), BLIP-2 Q-Former, frozen parts in bf16 (random weights, every byte written), fp32 VPG-C +
    AdamW; two training steps of batch 1 (loss only at labelled positions). ``vision_input``: ``pixels``
    (EVA-CLIP-g in memory, run every step) or ``cache`` (the frozen-feature cache's path: no vision tower in
    memory, (1, 1, 257, 1408) bf16 features). Returns times and the whole process's peak RSS."""
    start = time.perf_counter()
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # never materialise the 7B model in fp32 (27 GB)
    try:
        config = llama_7b_config()
        config.num_hidden_layers = layers
        llm = LlamaForCausalLM(config)
        vision = None
        if vision_input == "pixels":
            vision = TimmEvaEncoder(EvaVisionConfig.preset("eva_clip_g"), dtype=torch.bfloat16)
        vpg = QFormer(QFormerConfig.preset("blip2"))
    finally:
        torch.set_default_dtype(default)
    vpgc = VPGC.from_qformer(vpg, VPGCConfig.preset("vicuna7b", layer=layers // 2))  # fp32 adapter
    model = VisionLanguageModel(llm, vision, image_token_id=SLOT, vpg=vpg, vpgc=vpgc).train()
    report = model.parameter_report()
    built = time.perf_counter() - start
    batch = make_batch(1, 32000, 32, 224)
    if vision_input == "cache":
        g = torch.Generator().manual_seed(0)
        batch["vision_features"] = torch.randn(1, 1, 257, 1408, generator=g).to(torch.bfloat16)
        del batch["pixel_values"]
    optimizer = torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-5, weight_decay=0.05)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        model(**batch, loss_only=True).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    return {
        "llm_layers": layers,
        "vpgc_layer": layers // 2,
        "vision_input": vision_input,
        "batch_tokens": int(batch["input_ids"].shape[1]),
        "total_weights": report["total"],
        "trainable_weights": report["trainable"],
        "weights_gib": weights_gib,
        "build_s": built,
        "step_s": times,
        **peak_rss_gib(),
    }


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def scale_7b(args) -> dict:
    """Each (layers, vision input) in its own subprocess (a clean peak RSS); a line through peak RSS against
    layer count per vision input gives the 32-layer figure where 32 layers were not run."""
    import subprocess

    runs = []
    for vision_input in args.vision_inputs:
        for layers in args.layers:
            cmd = [sys.executable, __file__, "--scale-7b-child", str(layers), vision_input]
            load = os.getloadavg()
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            run["load_before"] = load
            runs.append(run)
            print(json.dumps(run))
    fits = {}
    for vision_input in args.vision_inputs:
        rows = [r for r in runs if r["vision_input"] == vision_input]
        measured_32 = [r for r in rows if r["llm_layers"] == 32]
        entry = {"measured_32_layers": bool(measured_32)}
        if len(rows) >= 2:
            a, b = fit_line([r["llm_layers"] for r in rows], [r["vmhwm_gib"] for r in rows])
            entry.update({"gib_fixed": a, "gib_per_layer": b, "fit_32_layers_gib": a + 32 * b})
        entry["peak_rss_32_layers_gib"] = (
            measured_32[0]["vmhwm_gib"] if measured_32 else entry.get("fit_32_layers_gib")
        )
        fits[vision_input] = entry
    return {
        "command": "python benchmarks/vpgc_step.py " + " ".join(sys.argv[1:]),
        "what": "Vicuna-7B width (4096, 32 heads, MLP 11008, vocab 32k) with the given decoder layer count, "
        "VPG-C at k = layers / 2, BLIP-2 Q-Former, EVA-CLIP-g (39 blocks, 224 px) when vision_input = pixels; "
        "frozen parts bf16 with random weights, VPG-C fp32 + AdamW; batch 1, loss only at labelled tokens",
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "machine_memory_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "runs": runs,
        "peak_rss_by_vision_input": fits,
        "target_gib": 16.0,
    }


def readme_block(result: dict) -> str:
    """The benchmarks/README.md block of this script, rendered from its JSON."""
    rows = result["variants"]
    lines = [
        f"{result['shapes']}; {result['threads']} threads, torch {result['torch']}, median of {result['repeat']} "
        "interleaved steps.",
        "",
        "| variant | step ms | process CPU ms | gradient rel. deviation | first call s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, r in rows.items():
        dev = r.get("grad_rel_dev_vs_research_fp32", r.get("grad_rel_dev_vs_research_fp32_same_precision"))
        first = f"{r['first_call_s']:.0f}" if "first_call_s" in r else "n/a"
        lines.append(f"| {name} | {r['step_ms']:.0f} | {r['cpu_ms']:.0f} | {dev:.1e} | {first} |")
    p = result["vpgkit_bf16_profile"]

    def cpu_ratio(precision: str) -> float:
        return rows[f"research design {precision}"]["cpu_ms"] / rows[f"vpgkit {precision}"]["cpu_ms"]

    lines += [
        "",
        f"vpgkit bf16 vs research design bf16: **{result['speedup_bf16']:.2f}×** in wall time, "
        f"{cpu_ratio('bf16'):.2f}× in process CPU time; fp32 vs fp32: {result['speedup_fp32']:.2f}× / "
        f"{cpu_ratio('fp32'):.2f}×. vpgkit bf16's matmuls: {p['matmul_gflop']:.0f} GFLOP per step, "
        f"{100 * p['matmul_share_of_cpu_time']:.0f}% of its CPU time; per CPU second of the step that is "
        f"{100 * result['vpgkit_bf16_matmul_share_of_gemm_rate']:.0f}% of the rate of a 2048² bf16 GEMM in "
        f"the same run ({result['gemm_gflops_now']['bfloat16']['per_cpu_second']:.0f} GFLOP per CPU second).",
    ]
    if "exact_work_floor" in result:
        f = result["exact_work_floor"]
        lines.append(
            f"Work no exact step can avoid ({f['what']}): {f['gflop']:.0f} GFLOP, {f['ms_at_gemm_rate']:.0f} ms "
            f"if every FLOP ran at that GEMM rate, so no exact step on this machine beats the research design "
            f"bf16 by more than **{result['max_speedup_bf16']:.1f}×** (process CPU time)."
        )
    if "kv_reuse_speedup" in result:
        same = "bitwise equal" if result["kv_reuse_grads_bitwise_equal"] else "NOT bitwise equal"
        lines.append(
            f"Reusing the Q-Former's image-side keys/values in VPG-C's pass: {result['kv_reuse_speedup']:.2f}× "
            f"wall, {result['kv_reuse_cpu_speedup']:.2f}× CPU against the same configuration recomputing them "
            f"(gradients {same})."
        )
    compiled = rows.get("vpgkit bf16, compiled LLM layers")
    if result.get("compile_error"):
        lines.append(f"`--compile` failed on this machine: {result['compile_error']}")
    if compiled:
        lines.append(
            f"`--compile` (every LLM decoder layer through torch.compile, inductor): "
            f"{rows['vpgkit bf16']['step_ms'] / compiled['step_ms']:.2f}× wall, "
            f"{rows['vpgkit bf16']['cpu_ms'] / compiled['cpu_ms']:.2f}× CPU against vpgkit bf16, "
            f"first call {compiled['first_call_s']:.0f} s (compilation)."
        )
    if "load_before" in result:
        lines.append(
            f"Machine load (1-min average) {result['load_before'][0]:.2f} before, {result['load_after'][0]:.2f} "
            f"after; command `{result['command']}`."
        )
    return "\n".join(lines)


def readme_block_7b(result: dict) -> str:
    """The README block of ``--scale 7b``, rendered from its JSON."""
    lines = [
        f"{result['what']}; {result['threads']} threads, torch {result['torch']}, "
        f"{result['machine_memory_gib']:.1f} GiB machine.",
        "",
        "| LLM layers | vision input | weights GiB | build s | step s (1st, 2nd) | peak RSS GiB (VmHWM) | load before |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        lines.append(
            f"| {r['llm_layers']} | {r['vision_input']} | {r['weights_gib']:.2f} | {r['build_s']:.0f} "
            f"| {r['step_s'][0]:.1f}, {r['step_s'][1]:.1f} | {r['vmhwm_gib']:.2f} | {r['load_before'][0]:.2f} |"
        )
    lines.append("")
    for vision_input, f in result["peak_rss_by_vision_input"].items():
        how = (
            "measured"
            if f["measured_32_layers"]
            else "extrapolated from the line through the measured depths"
        )
        fit = (
            f" (line: {f['gib_fixed']:.2f} GiB + {f['gib_per_layer']:.3f} GiB per layer → "
            f"{f['fit_32_layers_gib']:.2f} GiB at 32)"
            if "gib_per_layer" in f
            else ""
        )
        verdict = "<" if f["peak_rss_32_layers_gib"] < result["target_gib"] else "≥"
        lines.append(
            f"- vision input {vision_input}: full 32-layer 7B peak RSS **{f['peak_rss_32_layers_gib']:.2f} GiB** "
            f"({how}){fit}, {verdict} {result['target_gib']:.0f} GiB."
        )
    lines += ["", f"Command: `{result['command']}`."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", choices=["mid", "7b"], default="mid")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--compile", action="store_true", help="also vpgkit bf16 with every LLM decoder layer torch.compile'd"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--readme", action="store_true", help="only rewrite benchmarks/README.md's block")
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 16, 32], help="--scale 7b: LLM depths")
    parser.add_argument(
        "--vision-inputs", nargs="+", default=["cache", "pixels"], choices=["cache", "pixels"]
    )
    parser.add_argument("--scale-7b-child", nargs=2, metavar=("LAYERS", "VISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_7b_child:
        print(json.dumps(scale_7b_once(int(args.scale_7b_child[0]), args.scale_7b_child[1])))
        return
    if args.readme:
        write_block(ROOT / "README.md", "vpgc-step", readme_block(json.loads(args.out.read_text())))
        if RESULTS_7B.exists():
            write_block(
                ROOT / "README.md", "vpgc-step-7b", readme_block_7b(json.loads(RESULTS_7B.read_text()))
            )
        return
    if args.scale == "7b":
        result = scale_7b(args)
        write_results(RESULTS_7B, result)
        print(readme_block_7b(result))
        return
    result = mid_size(args)
    write_results(args.out, result)
    print(readme_block(result))


if __name__ == "__main__":
    main()
