"""HFVLMClassifier: a Hugging Face vision-language model (Qwen2.5-VL, Qwen2-VL, ...) as a region classifier.

The VLM is asked one question per crop and never writes text: q is read off the likelihood of each
class name as the answer.

    prefix  = chat template(user: [crop image, PROMPT with the class list]) + the assistant turn's start
    answer  = a phrasing of a class (its name or a synonym from classes.py, lower case and with a
              capital first letter) + the turn's end token
    log P(answer) = sum of the answer's token log-probabilities (no length normalisation: with the
                    end token included this is the probability of the whole answer string)
    score_c = log sum_{a in phrasings(c)} P(a)   (probability that the answer is any phrasing of c;
              a mean would penalise classes that have more synonyms by log #phrasings)
    q       = softmax(score / temperature)

The prefix (image + prompt) is run once per crop, in batches of `batch_size` crops; its KV cache is
then repeated over the A answer phrasings and all answers of the batch are scored in one forward
(B*A rows of at most max answer length - 1 tokens). All crops have the same size, so all prefixes
have the same length and need no padding.

Score only what can change: called with `classes` [N,C] bool (VLMPurifier passes the classes that
carry teacher probability in each region, see purify.topk / purify.prob_floor), only the answers of
those classes get a row in the answer forward (the prefix is needed anyway); every other class gets
the neutral score of `_base.fill_unscored` (the q of the least favoured scored class: under rule
bayes its teacher probability relative to that class is kept; why, and measured, there). The scored classes' q is exactly that
of full scoring renormalised: a class's score does not depend on the other answers.
`token_counts` adds up the tokens each call processed (prefix and answer rows, padding included).

`model`: a local folder (from `hf download Qwen/Qwen2.5-VL-3B-Instruct --local-dir DIR`), a hub id,
or a loaded model with `processor=`. Offline (HF_HUB_OFFLINE=1, or huggingface.co unreachable within
3 s), a folder or hub id whose files are missing is a FileNotFoundError before transformers is even
imported; there is never a fallback to random weights.
"""

import contextlib
import importlib.util
import inspect
import os
import time
from collections.abc import Sequence

import torch

from semiearth.purify.classifiers._base import (
    ClassifierError,
    check_classes,
    check_crops,
    fill_unscored,
    weights_file_problem,
)
from semiearth.purify.classifiers._shared import hub_offline, offline_mode
from semiearth.purify.classifiers.classes import SYNONYMS, dataset_synonyms, resolve_class_names

NAME = "HFVLMClassifier"
DEFAULT_MODEL = "Qwen/Qwen2.5-VL-3B-Instruct"
PROMPT = (
    "This is an aerial image patch. Which of these land-cover classes does the highlighted region show: "
    "{classes}? {hint} Answer with the class name."
)
# How the highlighted region looks in each view (see HFVLMClassifier.view).
HINTS = {
    "masked": "The region is the part that is not grey.",
    "box": "The region is inside the red box.",
}
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth")
_ANSWER_MARK = "XQZANSWERXQZ"  # a placeholder answer used to find what the template puts after an answer


def _fetch_help(repo: str, folder: str = "DIR") -> str:
    return (
        f"Fetch the weights on a machine with internet: `hf download {repo} --local-dir {folder}` "
        f"(`huggingface-cli download` with an older huggingface_hub; any Qwen2-VL / Qwen2.5-VL repo works), "
        f"copy the folder here and set purify.classifier_options.model to it"
    )


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.count("/") != 1 or os.sep != "/" and os.sep in model


def resolve_model_source(model: str, cache_dir: str | None = None) -> tuple[str, bool]:
    """(what from_pretrained gets, local_files_only) for a folder or hub id, or a FileNotFoundError.

    Fast and without transformers: a folder must hold config.json and weight files; a hub id offline
    must have its config.json in the Hugging Face cache.
    """
    path = os.path.expanduser(str(model))
    if os.path.isdir(path):
        missing = [] if os.path.isfile(os.path.join(path, "config.json")) else ["config.json"]
        if not any(f.endswith(WEIGHT_FILES) for f in os.listdir(path)):
            missing.append("weights (*.safetensors)")
        if missing:
            raise FileNotFoundError(
                f"{NAME}: model folder {path} lacks {' and '.join(missing)}. {_fetch_help(DEFAULT_MODEL, path)}"
            )
        check_model_folder(path)
        return path, True
    if _looks_like_path(str(model)):
        raise FileNotFoundError(f"{NAME}: model folder {path} does not exist. {_fetch_help(DEFAULT_MODEL, path)}")
    if not hub_offline():
        return str(model), False
    from huggingface_hub import try_to_load_from_cache

    if not isinstance(try_to_load_from_cache(str(model), "config.json", cache_dir=cache_dir), str):
        raise FileNotFoundError(
            f"{NAME}: {model} is not in the Hugging Face cache ({cache_dir or 'HF_HOME'}) and the hub is "
            f"offline. {_fetch_help(model)}"
        )
    return str(model), True


def check_model_folder(path: str) -> None:
    """ClassifierError naming the file when a model folder's config.json is not a transformers config
    or one of its weight files is not a weight file (read from their first bytes, before transformers)."""
    import json

    expected = (
        f"a transformers model folder (config.json with model_type, weights, processor files), e.g. {DEFAULT_MODEL}"
    )
    config = os.path.join(path, "config.json")
    try:
        with open(config, "rb") as f:
            data = json.loads(f.read().decode("utf-8"))
    except (ValueError, OSError) as err:
        why = f"it is not JSON ({str(err).splitlines()[0][:120]})"
        raise ClassifierError(f"{NAME}: {config}: {why}; expected {expected}") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ClassifierError(
            f"{NAME}: {config} has no model_type: it is not a transformers config; expected {expected}"
        )
    for name in sorted(os.listdir(path)):
        if name.endswith(WEIGHT_FILES) and os.path.isfile(os.path.join(path, name)):
            problem = weights_file_problem(os.path.join(path, name))
            if problem:
                raise ClassifierError(f"{NAME}: weight file {os.path.join(path, name)}: {problem}; expected {expected}")


def _transformers_at_least(version: str) -> bool:
    import transformers
    from packaging.version import Version

    return Version(transformers.__version__) >= Version(version)


def load_vlm(
    model: str,
    device="cpu",
    dtype=None,
    load_in_4bit: bool = False,
    cache_dir: str | None = None,
    attn_implementation: str | None = None,
):
    """(model in eval mode, processor) from a folder or hub id, through AutoModelForImageTextToText."""
    source, local_only = resolve_model_source(model, cache_dir)
    device = torch.device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    kwargs = {"cache_dir": cache_dir, "local_files_only": local_only}
    options = {"dtype" if _transformers_at_least("4.56") else "torch_dtype": dtype}
    if attn_implementation:
        options["attn_implementation"] = attn_implementation
    if load_in_4bit:
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ImportError(f"{NAME}: load_in_4bit needs bitsandbytes (pip install bitsandbytes)")
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
        options["device_map"] = {"": device}
    try:
        with offline_mode() if local_only else contextlib.nullcontext():
            processor = AutoProcessor.from_pretrained(source, **kwargs)
            net = AutoModelForImageTextToText.from_pretrained(source, **kwargs, **options)
    except OSError as err:
        first = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        fix = _fetch_help(DEFAULT_MODEL, source) if os.path.isdir(source) else _fetch_help(source)
        raise FileNotFoundError(f"{NAME}: cannot load {source} ({first}). {fix}") from err
    except Exception as err:  # noqa: BLE001 - transformers' many errors on a folder it cannot use, in one line
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        raise ClassifierError(
            f"{NAME}: cannot load the model in {source} ({type(err).__name__}{': ' + first if first else ''}); "
            f"expected a transformers image-text-to-text model (Qwen2-VL / Qwen2.5-VL). {_fetch_help(DEFAULT_MODEL, source)}"
        ) from None
    if not load_in_4bit:
        net = net.to(device)
    return net.eval(), processor


def class_phrasings(class_names: Sequence[str], synonyms: dict | None = None, capitalize: bool = True):
    """Per class, its answer phrasings: the name (underscores as spaces) first, then its synonyms,
    each also with a capital first letter when `capitalize` (chat models often answer "Building")."""
    table = SYNONYMS if synonyms is None else synonyms
    out = []
    for name in class_names:
        shown = name.replace("_", " ")
        words = [shown] + list(table.get(shown, table.get(name, [])))
        if capitalize:
            words = [v for w in words for v in (w, w[:1].upper() + w[1:])]
        out.append(list(dict.fromkeys(words)))
    return out


def budget_indices(regions: torch.Tensor, max_regions: int | None) -> torch.Tensor:
    """Indices of the regions to classify: all, or `max_regions` taken rank by rank across images
    (every image's most uncertain region first), in their original order."""
    n = regions.shape[0]
    if max_regions is None or n <= max_regions:
        return torch.arange(n, device=regions.device)
    image = regions[:, 0].long()
    first = torch.searchsorted(image, image, side="left")  # regions are grouped by image
    rank = torch.arange(n, device=regions.device) - first
    order = torch.sort(rank * (int(image.max()) + 1) + image, stable=True).indices
    return order[:max_regions].sort().values


class HFVLMClassifier:
    """Region classifier on any `AutoModelForImageTextToText` model with a chat template.

    view: "masked" (default: the purifier's masked crop, pixels of other classes grey) or "box" (the
    unmasked context crop with the segment's cell outlined in red; build the purifier with
    `mask_crops=classifier.mask_crops`). Which one works better needs real weights to measure.
    input_size: crop side; a multiple of 28 (Qwen's patch 14 x merge 2) is used as is, unresampled.
    max_regions: at most this many regions per call get a VLM answer (taken rank by rank across
    images), the others q = 1/C, which rule "bayes" turns into no change at all.
    dtype: default bfloat16 on CUDA, float32 on CPU; autocast (None: on CUDA) runs in that dtype.
    attn_implementation: passed to from_pretrained (None: transformers' default, sdpa). Qwen's vision
    tower runs sdpa once per attention window and crop, flash_attention_2 once per layer.
    topk, prob_floor: the purifier's defaults for which classes to score per region (0: all; see
    VLMPurifier); from_config sets them from purify.topk and purify.prob_floor.
    token_counts: running totals {"calls", "regions", "prefix", "answers", "answer_rows"}: tokens of the
    prefix forwards and of the answer forward (rows x padded length) over the regions scored.
    """

    @classmethod
    def from_config(cls, ctx) -> "HFVLMClassifier":
        t0 = time.perf_counter()
        options = {
            "device": ctx.device,
            "topk": getattr(ctx.purify, "topk", 0),
            "prob_floor": getattr(ctx.purify, "prob_floor", 0.0),
            "synonyms": dataset_synonyms(ctx.data.name),
            **ctx.purify.classifier_options,
        }
        clf = cls(class_names=ctx.data.class_names, **options)
        ctx.log(
            f"[semiearth] VLM classifier {clf.model_name} loaded in {time.perf_counter() - t0:.1f}s "
            f"({len(clf.answers)} answer phrasings, view {clf.view})"
        )
        return clf

    def __init__(
        self,
        model: str | torch.nn.Module = DEFAULT_MODEL,
        class_names: str | Sequence[str] = "potsdam",
        processor=None,
        synonyms: dict | None = None,
        capitalize: bool = True,
        prompt: str = PROMPT,
        view: str = "masked",
        input_size: int = 224,
        temperature: float = 1.0,
        batch_size: int = 16,
        max_regions: int | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | str | None = None,
        autocast: bool | None = None,
        load_in_4bit: bool = False,
        cache_dir: str | None = None,
        attn_implementation: str | None = None,
        topk: int = 0,
        prob_floor: float = 0.0,
    ):
        if view not in HINTS:
            raise ValueError(f"{NAME}: view must be one of {sorted(HINTS)}, got {view!r}")
        if not temperature > 0:
            raise ValueError(f"{NAME}: temperature must be > 0, got {temperature!r}")
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        if isinstance(model, torch.nn.Module):
            if processor is None:
                raise ValueError(f"{NAME}: pass processor= with a model given as a module")
            self.model, self.processor, self.model_name = model.eval(), processor, type(model).__name__
        else:
            self.model, self.processor = load_vlm(model, device, dtype, load_in_4bit, cache_dir, attn_implementation)
            self.model_name = str(model)
        self.class_names = resolve_class_names(class_names)
        self.num_classes = len(self.class_names)
        synonyms = dataset_synonyms(class_names) if synonyms is None else synonyms
        self.phrasings = class_phrasings(self.class_names, synonyms, capitalize)
        self.view, self.mask_crops = view, view == "masked"
        self.input_size, self.batch_size = int(input_size), int(batch_size)
        self.temperature, self.max_regions, self.autocast = float(temperature), max_regions, autocast
        image_processor = getattr(self.processor, "image_processor", self.processor)
        self.mean = tuple(float(x) for x in getattr(image_processor, "image_mean", None) or (0.0, 0.0, 0.0))
        self.std = tuple(float(x) for x in getattr(image_processor, "image_std", None) or (1.0, 1.0, 1.0))
        shown = ", ".join(name.replace("_", " ") for name in self.class_names)
        self.prompt = prompt.format(classes=shown, hint=HINTS[view])
        self.prefix = self._chat([{"type": "image"}, {"type": "text", "text": self.prompt}])
        self.answers, self.answer_class, self.answer_tokens, self.answer_lengths = self._answers()
        self._cells = None  # (regions, cell boxes [N,4] in image pixels) from observe(), for view "box"
        self.topk, self.prob_floor = int(topk), float(prob_floor)
        self.token_counts = dict.fromkeys(("calls", "regions", "prefix", "answers", "answer_rows"), 0)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ prompt and answers

    def _chat(self, content, answer: str | None = None) -> str:
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=answer is None)

    def _end_text(self) -> str:
        """What the chat template writes right after an assistant answer (Qwen: "<|im_end|>")."""
        content = [{"type": "image"}, {"type": "text", "text": self.prompt}]
        full = self._chat(content, _ANSWER_MARK)
        if full.startswith(self.prefix) and full[len(self.prefix) :].startswith(_ANSWER_MARK):
            return full[len(self.prefix) + len(_ANSWER_MARK) :].rstrip()
        return getattr(self._tokenizer, "eos_token", None) or ""

    @property
    def _tokenizer(self):
        return getattr(self.processor, "tokenizer", self.processor)

    def _answers(self):
        """Answer strings, their class, tokens [A,L] (right-padded) and lengths [A].

        Tokens are those of the answer after the prefix in the joint tokenisation, so they are
        exactly what the model would see after the prompt."""
        tok, end = self._tokenizer, self._end_text()
        prefix_ids = tok(self.prefix, add_special_tokens=False)["input_ids"]
        answers, owner, ids = [], [], []
        for c, words in enumerate(self.phrasings):
            for word in words:
                full = tok(self.prefix + word + end, add_special_tokens=False)["input_ids"]
                if full[: len(prefix_ids)] != prefix_ids or len(full) == len(prefix_ids):
                    raise ValueError(f"{NAME}: the answer {word!r} does not tokenise as a continuation of the prompt")
                answers.append(word)
                owner.append(c)
                ids.append(full[len(prefix_ids) :])
        lengths = torch.tensor([len(t) for t in ids])
        tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.long)
        for i, t in enumerate(ids):
            tokens[i, : len(t)] = torch.tensor(t)
        return answers, torch.tensor(owner), tokens, lengths

    # ------------------------------------------------------------------ crops as the VLM sees them

    def observe(self, stats, regions, seg_table) -> None:
        """Remember each region's cell box (image pixels) for view "box" (VLMPurifier calls this)."""
        where = (seg_table >= 0).nonzero()  # b, cy, cx, class
        boxes = torch.zeros(regions.shape[0], 4, device=regions.device)
        cell = float(stats.cell)
        h, w = stats.label.shape[1:]
        yx = where[:, 1:3].float() * cell
        cells = torch.stack([yx[:, 1], yx[:, 0], (yx[:, 1] + cell).clamp(max=w), (yx[:, 0] + cell).clamp(max=h)], 1)
        boxes[seg_table[tuple(where.T)].long()] = cells
        self._cells = (regions, boxes)

    def _cell_boxes(self, regions: torch.Tensor) -> torch.Tensor:
        """[N,4] cell box of each region: from observe() when it saw these regions, else the box's
        central half (the cell of the purifier's default context 2, away from image borders)."""
        if self._cells is not None:
            seen, boxes = self._cells
            if seen.shape == regions.shape and torch.equal(seen, regions):
                return boxes
        x1, y1, x2, y2 = regions[:, 1:5].unbind(1)
        mx, my, hx, hy = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 4, (y2 - y1) / 4
        return torch.stack([mx - hx, my - hy, mx + hx, my + hy], 1)

    def pixels(self, crops: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """RGB in [0, 1], [N,3,S,S], from crops normalised with mean/std; view "box" draws the cell."""
        mean = crops.new_tensor(self.mean).view(1, 3, 1, 1)
        std = crops.new_tensor(self.std).view(1, 3, 1, 1)
        rgb = (crops * std).add_(mean).clamp_(0, 1)
        if self.view == "box" and rgb.shape[0]:
            rgb = draw_boxes(rgb, regions, self._cell_boxes(regions).to(rgb.device))
        return rgb

    # ------------------------------------------------------------------ scoring

    def _forward_kwargs(self) -> set:
        return set(inspect.signature(self.model.forward).parameters)

    def _autocast(self):
        dev = self.device
        use = dev.type == "cuda" if self.autocast is None else self.autocast
        dtype = next(p.dtype for p in self.model.parameters() if p.is_floating_point())
        dtype = dtype if dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
        return torch.autocast(device_type=dev.type, dtype=dtype, enabled=bool(use))

    @torch.no_grad()
    def answer_logprobs(self, pixels: torch.Tensor, answers: torch.Tensor | None = None) -> torch.Tensor:
        """[N,A] float32 log P(answer a | crop n, prompt) for RGB crops [N,3,S,S] in [0, 1]; with
        `answers` [N,A] bool, only those are scored and the others are -inf."""
        out = [
            self._batch_logprobs(
                pixels[i : i + self.batch_size], None if answers is None else answers[i : i + self.batch_size]
            )
            for i in range(0, pixels.shape[0], self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, len(self.answers))

    def _batch_logprobs(self, pixels: torch.Tensor, answers: torch.Tensor | None = None) -> torch.Tensor:
        """[B,A] answer log-probabilities of one batch: the prefix once, then the answers (all, or
        those of `answers` [B,A] bool, the others -inf) from its cache, in one forward."""
        b, a = pixels.shape[0], len(self.answers)
        first, prefix_len = self._run_prefix(pixels)
        tokens = self.answer_tokens.to(self.device)
        logp = first.logits[:, -1].float().log_softmax(-1)[:, tokens[:, 0]]  # first answer token
        if answers is None:
            rows = torch.arange(b * a, device=self.device)
        else:
            rows = answers.to(self.device).flatten().nonzero().flatten()
        self.token_counts["prefix"] += b * prefix_len
        self.token_counts["answer_rows"] += int(rows.numel())
        if tokens.shape[1] > 1 and rows.numel():
            crop, answer = rows // a, rows % a
            later = torch.zeros(b * a, device=self.device)
            later[rows] = self._run_answers(first, crop, answer, prefix_len)  # the answers' later tokens
            logp = logp + later.view(b, a)
        if answers is not None:
            logp = torch.where(answers.to(self.device), logp, float("-inf"))
        return logp.cpu()

    def _run_prefix(self, pixels: torch.Tensor):
        """(model output with the KV cache and last-position logits, prefix length) for B crops."""
        images = list(pixels.to(self.device))  # the torchvision image processor works on the model's device
        inputs = self.processor(
            text=[self.prefix] * pixels.shape[0], images=images, return_tensors="pt", do_rescale=False
        )
        inputs = inputs.to(self.device)
        if not bool(inputs["attention_mask"].bool().all()):
            raise RuntimeError(f"{NAME}: the prompts of equal crops tokenised to different lengths")
        keep = {"logits_to_keep": 1} if "logits_to_keep" in self._forward_kwargs() else {}
        with self._autocast():
            return self.model(**inputs, use_cache=True, **keep), inputs["input_ids"].shape[1]

    def _run_answers(self, first, crop: torch.Tensor, answer: torch.Tensor, prefix_len: int) -> torch.Tensor:
        """[R] summed log-probabilities of answer tokens 2..L of R (crop, answer) rows, from the prefix
        cache of each row's crop (answer tokens 1..L-1 as input, right-padded to the rows' longest)."""
        lengths = self.answer_lengths.to(self.device)[answer]
        steps = int(lengths.max()) - 1
        if steps < 1:
            return torch.zeros(answer.shape[0], device=self.device)
        tokens = self.answer_tokens.to(self.device)[answer, : steps + 1]
        r = answer.shape[0]
        cache = getattr(first, "cache", None)  # transformers 5; 4.x calls it past_key_values
        cache = first.past_key_values if cache is None else cache
        cache.batch_select_indices(crop)
        pos = prefix_len + torch.arange(steps, device=self.device).expand(r, steps)
        deltas = getattr(getattr(self.model, "model", None), "rope_deltas", getattr(self.model, "rope_deltas", None))
        if deltas is not None:  # multimodal RoPE (Qwen-VL): text positions continue from the image's
            pos = (pos + deltas.flatten()[crop.to(deltas.device)].view(r, 1).to(pos))[None].expand(3, -1, -1)
        cache_key = "cache" if "cache" in self._forward_kwargs() else "past_key_values"
        self.token_counts["answers"] += r * steps
        with self._autocast():
            out = self.model(
                input_ids=tokens[:, :-1],
                attention_mask=torch.ones(r, prefix_len + steps, dtype=torch.long, device=self.device),
                position_ids=pos,
                use_cache=True,
                **{cache_key: cache},
            )
        steps_logp = token_logprobs(out.logits, tokens[:, 1:])
        valid = torch.arange(steps, device=self.device) < (lengths - 1)[:, None]
        return torch.where(valid, steps_logp, 0.0).sum(1)

    def class_scores(self, pixels: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """[N,C] float32 log P(the answer is a phrasing of class c | crop n); with `classes` [N,C]
        bool only those classes' answers are run, the others are -inf."""
        answers = None if classes is None or bool(classes.all()) else classes.cpu()[:, self.answer_class]
        logp = self.answer_logprobs(pixels, answers)
        return torch.stack([logp[:, self.answer_class == c].logsumexp(1) for c in range(self.num_classes)], 1)

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, regions: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """q [N,C] for crops [N,3,S,S] of regions [N,6]; `classes` [N,C] bool: score only those per
        region, the others at the neutral q of `_base.fill_unscored` (None: every class)."""
        check_crops(NAME, crops, regions, self.input_size)
        classes = check_classes(NAME, classes, crops.shape[0], self.num_classes)
        q = torch.full((crops.shape[0], self.num_classes), 1.0 / self.num_classes, device=crops.device)
        keep = budget_indices(regions, self.max_regions)
        self.token_counts["calls"] += 1
        self.token_counts["regions"] += int(keep.numel())
        if keep.numel():
            pixels = self.pixels(crops, regions)  # all regions, so that observe()'s cells match
            pixels = pixels if keep.numel() == crops.shape[0] else pixels[keep]
            kept = None if classes is None else classes[keep.to(classes.device)].cpu()
            scores = self.class_scores(pixels, kept)
            q[keep] = fill_unscored(scores, kept, self.temperature).to(q.device)
        return q


def token_logprobs(logits: torch.Tensor, target: torch.Tensor, rows: int = 256) -> torch.Tensor:
    """[R,T] float32 log-softmax of logits [R,T,V] at target [R,T], `rows` rows at a time (a float32
    copy of all of a 3B model's answer logits would be tens of GB)."""
    out = [
        logits[i : i + rows].float().log_softmax(-1).gather(2, target[i : i + rows, :, None])[..., 0]
        for i in range(0, logits.shape[0], rows)
    ]
    return torch.cat(out)


def draw_boxes(rgb: torch.Tensor, regions: torch.Tensor, boxes: torch.Tensor, color=(1.0, 0.0, 0.0)) -> torch.Tensor:
    """rgb [N,3,S,S] with each image box [N,4] outlined (2 px per 112 px of crop), mapped into the
    crop frame of its region [N,6]."""
    n, _, s, _ = rgb.shape
    x1, y1, x2, y2 = regions[:, 1:5].float().unbind(1)
    sx, sy = s / (x2 - x1).clamp(min=1e-6), s / (y2 - y1).clamp(min=1e-6)
    u1, u2 = (boxes[:, 0] - x1) * sx, (boxes[:, 2] - x1) * sx
    v1, v2 = (boxes[:, 1] - y1) * sy, (boxes[:, 3] - y1) * sy
    t = max(1.0, 2.0 * s / 112)
    grid = torch.arange(s, device=rgb.device, dtype=torch.float32) + 0.5
    gx, gy = grid.view(1, 1, s), grid.view(1, s, 1)
    inside_x = (gx >= u1.view(n, 1, 1)) & (gx <= u2.view(n, 1, 1))
    inside_y = (gy >= v1.view(n, 1, 1)) & (gy <= v2.view(n, 1, 1))
    near_x = ((gx - u1.view(n, 1, 1)).abs() < t) | ((gx - u2.view(n, 1, 1)).abs() < t)
    near_y = ((gy - v1.view(n, 1, 1)).abs() < t) | ((gy - v2.view(n, 1, 1)).abs() < t)
    edge = (near_x & inside_y) | (near_y & inside_x)  # [N,S,S]
    paint = rgb.new_tensor(color).view(1, 3, 1, 1).expand_as(rgb)
    return torch.where(edge[:, None], paint, rgb)
