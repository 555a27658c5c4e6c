"""Datasets a :class:`~vpgkit.config.DataConfig` describes, tokenised for a given model."""

from __future__ import annotations

from pathlib import Path

from ..backbones.language import max_positions
from ..config import DataConfig, SourceConfig
from ..data import DataError, SampleTokenizer, SkipReport
from ..data.dataset import SampleDataset
from ..data.feature_cache import FeatureCache
from ..data.mixture import MixtureDataset
from ..data.readers import READERS
from ..data.toy import toy_captions
from .features import encoder_fingerprint, precompute_features
from .preflight import check_datasets, check_max_length


def read_source(source: SourceConfig, report: SkipReport | None):
    """The Samples of one source (see :class:`~vpgkit.config.SourceConfig` for the formats)."""
    if source.format == "toy":
        return toy_captions(
            int(source.options.get("count", 256)),
            int(source.options.get("image_size", 28)),
            int(source.options.get("seed", 0)),
        )
    if source.format not in READERS:
        raise ValueError(
            f"data source {source.name!r}: format {source.format!r} is not one of {['toy', *sorted(READERS)]}"
        )
    if not source.path:
        raise ValueError(f"data source {source.name!r}: path is required for format {source.format!r}")
    if not Path(source.path).exists():
        raise FileNotFoundError(f"data source {source.name!r}: {source.path} does not exist")
    if source.format == "mimicit":
        return READERS["mimicit"](
            source.path,
            source.options.get("train_config"),
            source.images,
            report=report,
            **{k: v for k, v in source.options.items() if k != "train_config"},
        )
    return READERS[source.format](source.path, source.images, report=report, **source.options)


def sample_tokenizer(config: DataConfig, tokenizer, model) -> SampleTokenizer:
    """Tokenisation matching ``model``'s image convention (N_q slots per image, or one marker)."""
    slots = model.image_slots_per_image
    return SampleTokenizer(
        tokenizer,
        config.template,
        system=config.system,
        image_token_id=model.image_token_id,
        slots_policy="query_tokens" if slots is not None else "marker",
        num_queries=slots if slots is not None else 1,
        max_length=config.max_length,
        truncation=config.truncation,
    )


def build_split(sources: list[SourceConfig], config: DataConfig, tokenizer, model, report: SkipReport):
    """A :class:`MixtureDataset` of the sources (names in order), or None when there are none."""
    if not sources:
        return None
    # A too-long data.max_length would otherwise fail only when the first long batch reaches the LM.
    check_max_length(config.max_length, max_positions(model.llm))
    st = sample_tokenizer(config, tokenizer, model)
    parts = {}
    for source in sources:
        if source.name in parts:
            raise ValueError(f"data: two sources are named {source.name!r}; names must be unique")
        try:
            samples = read_source(source, report if config.skip_bad_samples else None)
        except DataError as error:
            raise DataError(error.reason, f"data source {source.name!r}: {error}") from None
        # Before any image is encoded: an empty source would only fail later, inside the sampler.
        check_datasets({source.name: samples}, {source.name: source.path or source.format})
        common = dict(
            image_size=model.vision.image_size,
            # Readers join `images` into relative file paths already; only MIMIC-IT's image ids need the
            # store itself (joining twice broke relative roots such as the default outputs/vpgc/data).
            images=source.images if source.format == "mimicit" else None,
            skip_bad_samples=config.skip_bad_samples,
            report=report,
            name=source.name,
        )
        cache = None
        if config.feature_cache:
            # Encode each image once with the frozen encoder; the dataset then serves cached features.
            cache = FeatureCache(config.feature_cache, encoder_fingerprint(model.vision))
            precompute_features(
                SampleDataset(samples, st, return_image_hashes=True, **common), model.vision, cache
            )
        parts[source.name] = SampleDataset(samples, st, feature_cache=cache, **common)
    return MixtureDataset(parts)


def build_datasets(config: DataConfig, tokenizer, model):
    """(train, eval, per_batch): eval is None without eval sources; per_batch maps each train source to
    its samples per global batch (None when no source sets one). Skips are counted into one report."""
    report = SkipReport()
    per_batch = {s.name: s.per_batch for s in config.train if s.per_batch} or None
    train = build_split(config.train, config, tokenizer, model, report)
    return train, build_split(config.eval, config, tokenizer, model, report), per_batch
