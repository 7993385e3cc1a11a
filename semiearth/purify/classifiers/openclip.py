"""OpenClipClassifier: zero-shot region classification with any open_clip model.

Weights (`pretrained`): an open_clip tag ("openai", "laion2b_s34b_b79k", ...), an "hf-hub:org/repo"
id, a local checkpoint file, or None (random weights: plumbing tests only). Remote-sensing CLIP
checkpoints are open_clip state dicts of standard architectures; with model="auto" the architecture
is read from the file name:

| checkpoint file (source)                                     | open_clip model |
| ------------------------------------------------------------ | --------------- |
| RemoteCLIP-RN50.pt (hf chendelong/RemoteCLIP)                | RN50            |
| RemoteCLIP-ViT-B-32.pt                                       | ViT-B-32        |
| RemoteCLIP-ViT-L-14.pt                                       | ViT-L-14        |
| RS5M_ViT-B-32.pt (GeoRSCLIP, hf Zilun/GeoRSCLIP)             | ViT-B-32        |
| RS5M_ViT-L-14.pt / RS5M_ViT-L-14-336.pt                      | ViT-L-14 / ViT-L-14-336 |
| RS5M_ViT-H-14.pt                                             | ViT-H-14        |
| SkyCLIP_ViT_B32_top50pct/epoch_20.pt (SkyScript)             | ViT-B-32        |
| SkyCLIP_ViT_L14_top30pct/epoch_20.pt (and the other L14 runs)| ViT-L-14        |

(SkyCLIP files are open_clip training checkpoints: {"state_dict": {"module.…"}}; open_clip strips
both.) Offline (HF_HUB_OFFLINE=1, or huggingface.co unreachable within 3 s), a tag or hub id that
is not in the local cache is a FileNotFoundError within seconds that says which file is missing and
how to get it; there is never a silent fallback to random weights.
"""

import os
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from semiearth.purify.classifiers._base import ClassifierError, check_crops, load_error, weights_file_problem
from semiearth.purify.classifiers._shared import hub_offline, offline_mode
from semiearth.purify.classifiers.classes import TEMPLATES, dataset_synonyms, prompts_for, resolve_class_names

# (pattern in the file name, open_clip model), most specific first.
CHECKPOINT_MODELS = (
    (r"vit[-_]?l[-_]?14[-_]336", "ViT-L-14-336"),
    (r"vit[-_]?h[-_]?14", "ViT-H-14"),
    (r"vit[-_]?l[-_]?14", "ViT-L-14"),
    (r"vit[-_]?b[-_]?16", "ViT-B-16"),
    (r"vit[-_]?b[-_]?32", "ViT-B-32"),
    (r"rn50", "RN50"),
)


def model_for_checkpoint(path: str) -> str:
    """The open_clip architecture of a RemoteCLIP / GeoRSCLIP / SkyCLIP checkpoint, from its path."""
    name = str(path).lower()
    for pattern, model in CHECKPOINT_MODELS:
        if re.search(pattern, name):
            return model
    raise ValueError(
        f"cannot tell the open_clip architecture of {path!r} from its name; pass model= "
        f"(e.g. 'ViT-B-32'); known name patterns: {[m for _, m in CHECKPOINT_MODELS]}"
    )


def _missing(what: str, how: str, err: Exception | None = None) -> FileNotFoundError:
    tail = f" ({type(err).__name__}: {str(err).splitlines()[0][:200]})" if err else ""
    return FileNotFoundError(f"OpenClipClassifier: {what} is not available offline{tail}. {how}")


def load_open_clip(model: str, pretrained: str | None, device="cpu", cache_dir: str | None = None):
    """(open_clip model in eval mode, model name) with the weights `pretrained`, failing fast offline."""
    import open_clip

    if pretrained is not None and (
        os.path.sep in str(pretrained) or str(pretrained).endswith((".pt", ".bin", ".pth", ".safetensors"))
    ):
        path = os.path.expanduser(str(pretrained))
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"OpenClipClassifier: checkpoint file {path} does not exist. Download it (RemoteCLIP: "
                "huggingface.co/chendelong/RemoteCLIP, GeoRSCLIP: huggingface.co/Zilun/GeoRSCLIP, SkyCLIP: "
                "github.com/wangzhecheng/SkyScript) on a machine with internet and copy it here."
            )
        if model in (None, "auto"):
            model = model_for_checkpoint(path)
        expected = f"an open_clip state dict of {model} (RemoteCLIP, GeoRSCLIP, SkyCLIP or open_clip's own files)"
        problem = weights_file_problem(path)  # before the model is built
        if problem:
            raise ClassifierError(f"OpenClipClassifier: weight file {path}: {problem}; expected {expected}")
        try:
            return open_clip.create_model(model, pretrained=path, device=device), model
        except Exception as err:  # noqa: BLE001 - the loader's errors, worded with the file and what was expected
            hint = "; if the file is of another architecture, name it with classifier option model (e.g. ViT-B-32)"
            raise load_error(path, "OpenClipClassifier", expected, err, hint) from None
    if model in (None, "auto"):
        raise ValueError("OpenClipClassifier: model='auto' needs a checkpoint file path as pretrained")
    if str(model).startswith("hf-hub:"):
        if not hub_offline():
            return open_clip.create_model(model, device=device, cache_dir=cache_dir), model
        try:
            with offline_mode():
                return open_clip.create_model(model, device=device, cache_dir=cache_dir), model
        except Exception as err:
            raise _missing(
                f"{model} (open_clip_config.json + weights)",
                f"Run once with internet to fill the Hugging Face cache ({cache_dir or '~/.cache/huggingface'}), "
                "or download the checkpoint file and pass its path as pretrained=.",
                err,
            ) from err
    if pretrained is None:
        return open_clip.create_model(model, pretrained=None, device=device), model
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        raise ValueError(
            f"OpenClipClassifier: {pretrained!r} is neither a file nor a pretrained tag of {model}; "
            f"tags: {open_clip.list_pretrained_tags_by_model(model)}"
        )
    if hub_offline():
        if not cfg.get("hf_hub"):
            url = cfg.get("url", "")
            local = os.path.join(cache_dir or os.path.expanduser("~/.cache/clip"), os.path.basename(url))
            if not os.path.isfile(local):
                raise _missing(f"{model}/{pretrained} ({url})", f"Download it to {local} or pass a file path.")
            return open_clip.create_model(model, pretrained=local, device=device), model
        try:
            with offline_mode():
                return open_clip.create_model(model, pretrained=pretrained, device=device, cache_dir=cache_dir), model
        except Exception as err:
            raise _missing(
                f"the weights of {model}/{pretrained} (hf-hub {cfg['hf_hub']})",
                "Run once with internet to fill the Hugging Face cache, or download the file and pass its "
                "path as pretrained=.",
                err,
            ) from err
    return open_clip.create_model(model, pretrained=pretrained, device=device, cache_dir=cache_dir), model


class OpenClipClassifier:
    """Zero-shot q = softmax(scale * cos(image, class text)) with an open_clip model.

    Class text embedding = normalised mean over `templates` x synonyms of the class (see classes.py),
    computed once on first use and cached (`text_embeddings()`). Crops are encoded in batches of
    `batch_size` (prompts in batches of `text_batch_size`) under autocast (`autocast=None`: on CUDA only). `temperature=None` uses the model's
    learned logit scale.

    It scores every class and takes no `classes` argument ("score only what can change", purify.topk):
    its cost is the image encoder, and the class texts are encoded once, so restricting the classes
    per region would save one [N,D] x [D,C] product and only lose information.
    """

    @classmethod
    def from_config(cls, ctx) -> "OpenClipClassifier":
        options = {"synonyms": dataset_synonyms(ctx.data.name), **ctx.purify.classifier_options}
        return cls(class_names=ctx.data.class_names, **options)

    def __init__(
        self,
        model: str | torch.nn.Module = "ViT-B-32",
        pretrained: str | None = None,
        class_names: str | Sequence[str] = "potsdam",
        templates: Sequence[str] = TEMPLATES,
        synonyms: dict | None = None,
        batch_size: int = 64,
        autocast: bool | None = None,
        temperature: float | None = None,
        device: str | torch.device = "cpu",
        cache_dir: str | None = None,
        tokenizer=None,
        text_batch_size: int = 256,
    ):
        import open_clip

        self.class_names = resolve_class_names(class_names)
        self.num_classes = len(self.class_names)
        if isinstance(model, torch.nn.Module):
            if tokenizer is None:
                raise ValueError("OpenClipClassifier: pass tokenizer= with a model given as a module")
            self.model, self.model_name = model, type(model).__name__
        else:
            self.model, self.model_name = load_open_clip(model, pretrained, device=device, cache_dir=cache_dir)
        self.model.eval()
        self.tokenizer = tokenizer or open_clip.get_tokenizer(self.model_name)
        self.pretrained = pretrained
        self.templates = tuple(templates)
        if not self.templates or not all("{}" in t for t in self.templates):
            raise ValueError("OpenClipClassifier: templates must be non-empty strings with a '{}' placeholder")
        self.synonyms = dataset_synonyms(class_names) if synonyms is None else synonyms
        self.batch_size = int(batch_size)
        self.text_batch_size = int(text_batch_size)
        self.autocast = autocast
        self.temperature = temperature
        visual = self.model.visual
        size = getattr(visual, "image_size", 224)
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean = tuple(float(x) for x in getattr(visual, "image_mean", None) or open_clip.OPENAI_DATASET_MEAN)
        self.std = tuple(float(x) for x in getattr(visual, "image_std", None) or open_clip.OPENAI_DATASET_STD)
        self._text = None
        self.text_encodings = 0  # how many times the class texts were encoded (1 after the first call)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _autocast(self, device: torch.device):
        use = device.type == "cuda" if self.autocast is None else self.autocast
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        return torch.autocast(device_type=device.type, dtype=dtype, enabled=bool(use))

    @torch.no_grad()
    def text_embeddings(self) -> torch.Tensor:
        """[C,D] float32 unit class embeddings (cached after the first call)."""
        if self._text is None:
            prompts = [prompts_for(name, self.templates, self.synonyms) for name in self.class_names]
            flat = [p for group in prompts for p in group]
            tokens = self.tokenizer(flat).to(self.device)
            embs = []
            for i in range(0, tokens.shape[0], self.text_batch_size):
                with self._autocast(self.device):
                    text = tokens[i : i + self.text_batch_size]
                    embs.append(F.normalize(self.model.encode_text(text).float(), dim=-1))
            emb = torch.cat(embs)
            out, start = [], 0
            for group in prompts:
                out.append(F.normalize(emb[start : start + len(group)].mean(dim=0), dim=0))
                start += len(group)
            self._text = torch.stack(out)
            self.text_encodings += 1
        return self._text

    @torch.no_grad()
    def encode_images(self, crops: torch.Tensor) -> torch.Tensor:
        feats = []
        for i in range(0, crops.shape[0], self.batch_size):
            x = crops[i : i + self.batch_size].to(self.device)
            with self._autocast(x.device):
                feats.append(F.normalize(self.model.encode_image(x).float(), dim=-1))
        return torch.cat(feats) if feats else crops.new_zeros((0, self.text_embeddings().shape[1]))

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        check_crops("OpenClipClassifier", crops, regions, self.input_size)
        text = self.text_embeddings()
        if crops.shape[0] == 0:
            return crops.new_zeros((0, self.num_classes))
        img = self.encode_images(crops)
        if self.temperature is None:
            scale = float(self.model.logit_scale.exp().clamp(max=100))
        else:
            scale = 1.0 / float(self.temperature)
        return torch.softmax(scale * img @ text.T, dim=1).to(crops.device)
