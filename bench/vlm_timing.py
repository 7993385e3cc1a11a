"""Time one VLM-PP call with HFVLMClassifier on a VLM built from its config with random weights.

    python bench/vlm_timing.py --tiny --device cpu                      # plumbing cost, tiny model
    python bench/vlm_timing.py --arch qwen2.5-vl-3b --device cuda --regions 64 --json out.json

    python bench/vlm_timing.py --tiny --device cpu --input-size 224 --topk 0,3 --repeats 1   # tokens per region

Each row also reports the VLM tokens processed per scored region (hardware-independent): the prefix
(chat template + image tokens + prompt) and the answer forward (rows x padded answer length), for
purify.topk 0 (every class's answers) and the --topk values (only the candidate classes' answers;
prob_floor --prob-floor). Token counts depend on the processor (patch 14, merge 2) and the
tokenizer, not on the model's size: the tiny model gives the 3B's counts (with the word-level
synthetic tokenizer; Qwen's BPE splits a few class words into more pieces).

One call = VLMPurifier on B = regions / 16 teacher-like images of 518 x 518 (6 classes) with 16
regions each, crops of 224 px, the Potsdam classes and synonyms. Random weights time the real
architecture (cost does not depend on the values); q from them means nothing. The tokenizer is a
word-level one made here (`synthetic_tokenizer`) with Qwen's special tokens and a Qwen-style chat
template, so the prompt has about as many tokens as with Qwen's own tokenizer; the vocabulary size
of the LM head is the architecture's. `build_random_vlm` / `save_random_vlm` also serve the tests.
"""

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import teacher_like_logits  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>"]
SPECIAL += ["<|video_pad|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if loop.first and m['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Hub-style config.json contents (flat text keys), which every transformers version reads.
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-6,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "tie_word_embeddings": False,
}
ARCHS = {
    "tiny-qwen2-vl": {
        "model_type": "qwen2_vl",
        **TINY_TEXT,
        "vision_config": {"depth": 1, "embed_dim": 32, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2},
    },
    "tiny-qwen2.5-vl": {
        "model_type": "qwen2_5_vl",
        **TINY_TEXT,
        "vision_config": {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "out_hidden_size": 32,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
    },
    # Qwen/Qwen2.5-VL-3B-Instruct config.json (token ids are replaced by the synthetic tokenizer's).
    "qwen2.5-vl-3b": {
        "model_type": "qwen2_5_vl",
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "num_hidden_layers": 36,
        "num_attention_heads": 16,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128000,
        "max_window_layers": 70,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "sliding_window": 32768,
        "use_sliding_window": False,
        "tie_word_embeddings": True,
        "vocab_size": 151936,
        "vision_config": {
            "depth": 32,
            "hidden_act": "silu",
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "in_chans": 3,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
    },
}


def corpus() -> str:
    """Every word the classifier's prompts and answers use (all datasets' classes and synonyms)."""
    from semiearth.purify.classifiers import DATASET_CLASSES, SYNONYMS
    from semiearth.purify.classifiers.hf_vlm import HINTS, PROMPT

    names = sorted({n for v in DATASET_CLASSES.values() for n in v} | set(SYNONYMS))
    words = names + [w for v in SYNONYMS.values() for w in v]
    words += [w[:1].upper() + w[1:] for w in words] + ["You are a helpful assistant."]
    return " ".join([PROMPT.format(classes=", ".join(names), hint=" ".join(HINTS.values())), *words])


def synthetic_tokenizer(text: str | None = None):
    """A word-level fast tokenizer over `text` (default: corpus()) with Qwen's special tokens (after
    the words) and a Qwen-style chat template."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words = dict.fromkeys(w for w, _ in pre.pre_tokenize_str(corpus() if text is None else text))
    vocab = {w: i for i, w in enumerate(["[UNK]", *words, *SPECIAL])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    # transformers 4's Qwen processors accept only Qwen2TokenizerFast; 5's take any tokenizer.
    v4 = int(transformers.__version__.split(".")[0]) < 5
    cls = transformers.Qwen2TokenizerFast if v4 else transformers.PreTrainedTokenizerFast
    fast = cls(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        additional_special_tokens=SPECIAL[1:],
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _processor(model_type: str, tokenizer):
    import transformers

    image_processor = transformers.Qwen2VLImageProcessor()  # Qwen2-VL and Qwen2.5-VL defaults
    cls = transformers.Qwen2_5_VLProcessor if model_type == "qwen2_5_vl" else transformers.Qwen2VLProcessor
    video = getattr(transformers, "Qwen2VLVideoProcessor", None)
    kwargs = {"video_processor": video()} if video is not None else {}
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, **kwargs)


def build_random_vlm(arch: str = "tiny-qwen2-vl", device="cpu", dtype=torch.float32, seed: int = 0, attn=None):
    """(model with random weights in eval mode, processor) of architecture `arch` (see ARCHS);
    attn: attn_implementation (None: transformers' default)."""
    import transformers

    tokenizer = synthetic_tokenizer()
    spec = dict(ARCHS[arch])
    ids = tokenizer.convert_tokens_to_ids
    spec["vocab_size"] = max(spec.get("vocab_size", 0), len(tokenizer))
    spec.update(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"),
        pad_token_id=ids("<|endoftext|>"),
    )
    model_type = spec.pop("model_type")
    config = transformers.AutoConfig.for_model(model_type, **spec)
    torch.manual_seed(seed)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            kwargs = {"attn_implementation": attn} if attn else {}
            model = transformers.AutoModelForImageTextToText.from_config(config, **kwargs)
    finally:
        torch.set_default_dtype(old)
    return model.eval(), _processor(model_type, tokenizer)


def save_random_vlm(folder: str, arch: str = "tiny-qwen2-vl", seed: int = 0) -> str:
    """Save a random `arch` model and its processor to `folder` (tests load it like downloaded weights)."""
    model, processor = build_random_vlm(arch, seed=seed)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def resolve_attn(attn: str | None, device: torch.device) -> str | None:
    """ "auto": flash_attention_2 on CUDA when flash_attn is installed, else None (transformers' sdpa)."""
    if attn != "auto":
        return attn or None
    return "flash_attention_2" if device.type == "cuda" and importlib.util.find_spec("flash_attn") else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_vlm_call(
    arch: str = "qwen2.5-vl-3b",
    device: str = "cuda",
    regions: int = 64,
    image_size: int = 518,
    input_size: int = 224,
    batch_size: int = 64,
    view: str = "masked",
    repeats: int = 5,
    attn: str | None = "auto",
    vlm=None,
    topk: int = 0,
    prob_floor: float = 0.05,
) -> dict:
    """Median seconds of one VLM-PP call (and of its stages) with HFVLMClassifier on `arch`.

    attn: attn_implementation; "auto" = flash_attention_2 on CUDA when flash_attn is installed,
    else transformers' default (sdpa). vlm: a (model, processor) from build_random_vlm to reuse."""
    from semiearth.purify import HFVLMClassifier, VLMPurifier

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    t = time.perf_counter()
    model, processor = vlm if vlm is not None else build_random_vlm(arch, dev, dtype, attn=resolve_attn(attn, dev))
    build_s = time.perf_counter() - t
    clf = HFVLMClassifier(
        model, "potsdam", processor=processor, view=view, input_size=input_size, batch_size=batch_size,
        max_regions=regions,
    )  # fmt: skip
    b = max(1, math.ceil(regions / 16))
    logits = teacher_like_logits(b, 6, image_size, image_size, device=dev)
    images = torch.rand(b, 3, image_size, image_size, generator=torch.Generator().manual_seed(1)).to(dev)
    purifier = VLMPurifier(clf, 6, max_regions=math.ceil(regions / b), mask_crops=clf.mask_crops, topk=topk,
                           prob_floor=prob_floor)  # fmt: skip
    out = purifier(images, logits)  # warm-up
    clf.token_counts = dict.fromkeys(clf.token_counts, 0)
    calls, stages = [], []
    for _ in range(repeats):
        _sync(dev)
        t = time.perf_counter()
        out = purifier(images, logits)
        _sync(dev)
        calls.append(time.perf_counter() - t)
        stages.append(out.timings)
    import transformers

    counts = clf.token_counts
    per = max(counts["regions"], 1)
    return {
        "row": "vlm_pp HFVLMClassifier",
        "arch": arch,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dtype": str(dtype).replace("torch.", ""),
        "weights": "random (timing only)",
        "images": f"{b} x 3 x {image_size} x {image_size}",
        "regions": out.num_regions,
        "scored_regions": min(out.num_regions, regions),
        "input_size": input_size,
        "batch_size": batch_size,
        "view": view,
        "attn_implementation": model.config._attn_implementation,
        "answers": len(clf.answers),
        "max_answer_tokens": int(clf.answer_lengths.max()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "topk": topk,
        "prob_floor": prob_floor if topk else None,
        "classes_scored_per_region": float(out.classes.sum(1).float().mean()) if out.classes is not None else 6.0,
        "answer_rows_per_region": counts["answer_rows"] / per,
        "prefix_tokens_per_region": counts["prefix"] / per,
        "answer_tokens_per_region": counts["answers"] / per,
        "seconds_per_call": statistics.median(calls),
        "seconds_all": calls,
        "stage_seconds": {k: statistics.median(s[k] for s in stages) for k in stages[0]},
        "build_seconds": build_s,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="qwen2.5-vl-3b", choices=sorted(ARCHS))
    parser.add_argument("--tiny", action="store_true", help="the tiny Qwen2.5-VL (plumbing cost only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--regions", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=518)
    parser.add_argument("--input-size", default="224,112", help="crop side(s), one row each")
    parser.add_argument("--batch-size", type=int, default=64, help="crops per VLM forward")
    parser.add_argument("--view", default="masked", choices=["masked", "box"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--attn", default="auto", help="attn_implementation (auto: flash_attention_2 if installed)")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave the default)")
    parser.add_argument("--topk", default="0", help="purify.topk value(s), comma-separated, one row each (0: all)")
    parser.add_argument("--prob-floor", type=float, default=0.05, help="purify.prob_floor with topk > 0")
    parser.add_argument("--json", help='write {"rows": [...]} to this JSON file')
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    arch = "tiny-qwen2.5-vl" if args.tiny else args.arch
    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    vlm, rows = build_random_vlm(arch, dev, dtype, attn=resolve_attn(args.attn, dev)), []
    sizes = [int(v) for v in str(args.input_size).split(",")]
    for size, topk in [(s, k) for s in sizes for k in (int(v) for v in str(args.topk).split(","))]:
        row = time_vlm_call(
            arch, args.device, args.regions, args.image_size, size, args.batch_size, args.view, args.repeats,
            args.attn, vlm, topk, args.prob_floor,
        )  # fmt: skip
        rows.append(row)
        print(
            f"tokens per region (topk {topk}{f', prob_floor {args.prob_floor}' if topk else ''}, {size} px): "
            f"{row['classes_scored_per_region']:.2f} classes scored, prefix {row['prefix_tokens_per_region']:.1f}, "
            f"answers {row['answer_tokens_per_region']:.1f} ({row['answer_rows_per_region']:.1f} answer rows), "
            f"total {row['prefix_tokens_per_region'] + row['answer_tokens_per_region']:.1f}",
            flush=True,
        )
        stages = ", ".join(f"{k} {1000 * v:.1f}" for k, v in row["stage_seconds"].items())
        print(
            f"vlm_pp {arch} on {row['device']} ({row['dtype']}, random weights, {row['attn_implementation']}): "
            f"{row['regions']} regions, {size} px crops, {row['answers']} answers: "
            f"{1000 * row['seconds_per_call']:.1f} ms per call (median of {args.repeats}); stage medians ms: {stages}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
