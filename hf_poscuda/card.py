"""Dataset card text for a protected dataset, rendered from the Jinja template shipped in ``cards/``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import jinja2
from huggingface_hub import DatasetCardData

from . import __version__
from .protect import ProtectionSummary

logger = logging.getLogger(__name__)

TEMPLATE_NAME = "dataset_card.md"


def template_text(name: str = TEMPLATE_NAME) -> str:
    """Read a card template: from the installed wheel (``hf_poscuda/cards``), else from the source tree's ``cards/``."""
    packaged = resources.files("hf_poscuda") / "cards" / name
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    source_tree = Path(__file__).resolve().parent.parent / "cards" / name
    if source_tree.is_file():
        return source_tree.read_text(encoding="utf-8")
    raise FileNotFoundError(f"Card template {name!r} not found in the package or next to it; reinstall hf-poscuda.")


def render_card(
    splits: dict[str, ProtectionSummary],
    *,
    source: str | None = None,
    pretty_name: str | None = None,
    license: str | None = None,
    license_text: str = "Same license as the source dataset.",
    evaluation_markdown: str | None = None,
    tags: Sequence[str] = (),
) -> str:
    """Render README.md text for a protected dataset. Contains only the public key id, never the secret.

    Args:
        splits (`dict[str, ProtectionSummary]`): summary of each protected split (all from one key).
        source (`str`, *optional*): the source dataset's Hub id.
        pretty_name (`str`, *optional*): title.
        license (`str`, *optional*): license id for the YAML header.
        license_text (`str`): license and attribution paragraph.
        evaluation_markdown (`str`, *optional*): measured unlearnability results; when absent the card says
            plainly that nothing was measured for this dataset.
        tags (`Sequence[str]`): extra tags.
    """
    if not splits:
        raise ValueError("render_card needs at least one protected split summary.")
    key_ids = {s.key_id for s in splits.values()}
    if len(key_ids) != 1:
        raise ValueError(f"All splits must be protected with one key; got key ids {sorted(key_ids)}.")
    first = next(iter(splits.values()))
    data = DatasetCardData(
        license=license,
        pretty_name=pretty_name or (f"{source} (PosCUDA-protected)" if source else "PosCUDA-protected audio"),
        tags=["audio", "poscuda", "unlearnable-examples", *tags],
        source_datasets=[source] if source else None,
    )
    template = jinja2.Environment(autoescape=False, keep_trailing_newline=True).from_string(template_text())
    return template.render(
        card_data=data.to_yaml(),
        pretty_name=data.pretty_name,
        source=source,
        source_url=f"https://huggingface.co/datasets/{source}" if source else None,
        version=__version__,
        key_id=key_ids.pop(),
        splits=[{"name": n, "clips": s.clips, "snr_db": s.snr_db} for n, s in splits.items()],
        encoding="32-bit float WAV (lossless: the stored audio is exactly what the transform computed)",
        config=first.config,
        evaluation=evaluation_markdown,
        license_text=license_text,
    )


