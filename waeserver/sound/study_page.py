"""``REPORT/index.html``: the study shown, after ``evaluate`` has written its numbers and figures.

For each evaluated model (a bundle or a training run) this adds to REPORT:

    latent-NAME-raw.gif, latent-NAME-tsne.gif   the latent space over training, where a
                                                latent history (``latent_history.npz``) is found
    sounds/NAME/*.ogg                           the sound sets (waeserver.sound.sound_sets)

and writes one self-contained page (relative links only, no script) with the ablation tables,
the figures, the animations and an ``<audio>`` player per sound file.

A model's history is ``--latent-history`` where given, else ``MODEL/latent_history.npz``, else
that of the training run its bundle card names. The page says which, and whether the model's
own encoder reproduces one of its epochs (so a history from another run is never passed off as
the model's own).
"""

from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import numpy as np
import torch

from waeserver.data.dataset import NoteDataset
from waeserver.model.latent_history import HISTORY_FILE, LatentHistory, animate
from waeserver.settings import read_mapping
from waeserver.sound.bundle import pick_device
from waeserver.sound.sound_sets import NOTES_PER_SET, Voice, load_voice, sound_sets

log = logging.getLogger(__name__)

MATCH_TOLERANCE = 1e-3  # largest |dz| for "this encoder is that epoch's" (float noise is ~1e-6)
STYLE = """body{font-family:sans-serif;max-width:1180px;margin:1em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}td,th{border:1px solid #bbb;padding:3px 6px}
th{background:#eee}img{max-width:100%}audio{height:28px;width:210px}figure{margin:1em 0}
figcaption,.note{font-size:.85em;color:#555}code{background:#f3f3f3;padding:0 2px}"""


class StudyPageError(ValueError):
    """A study page that cannot be written, with the reason."""


def find_history(model: Path, explicit: Path | None = None) -> Path | None:
    """The latent history for ``model``: ``explicit`` (a file or a run folder), the model's own
    folder, or the auto-encoder run its bundle card names; None when there is none."""
    if explicit is not None:
        path = explicit / HISTORY_FILE if explicit.is_dir() else explicit
        if not path.is_file():
            raise StudyPageError(f"--latent-history {explicit}: no {HISTORY_FILE} there")
        return path
    if (model / HISTORY_FILE).is_file():
        return model / HISTORY_FILE
    card = model / "card.yaml"
    if card.is_file():
        training = read_mapping(card, "bundle card").get("training") or {}
        run = training.get("autoencoder") if isinstance(training, dict) else None
        if isinstance(run, str) and (Path(run) / HISTORY_FILE).is_file():
            return Path(run) / HISTORY_FILE
    return None


@torch.no_grad()
def history_match(history: LatentHistory, voice: Voice, ds: NoteDataset) -> tuple[int | None, float]:
    """(the epoch whose points the model's encoder reproduces or None, the smallest largest |dz|)."""
    if voice.encode is None or history.index.max(initial=-1) >= len(ds) or history.styles != list(ds.styles):
        return None, float("inf")
    mel = torch.from_numpy(np.ascontiguousarray(np.asarray(ds.features())[history.index])).to(voice.device)
    z = voice.encode(mel).cpu().numpy()
    if z.shape != history.z.shape[1:]:
        return None, float("inf")
    worst = np.abs(history.z - z[None]).reshape(len(history.z), -1).max(1)
    best = int(np.argmin(worst))
    return (int(history.epoch[best]) if worst[best] <= MATCH_TOLERANCE else None), float(worst[best])


def markdown_html(text: str) -> str:
    """The small Markdown ``ablation.md`` uses (headings, pipe tables, paragraphs, code, bold) as HTML."""
    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)

    out, table = [], []

    def flush() -> None:
        if table:
            head, body = table[0], [r for r in table[1:] if not set(r.replace("|", "").strip()) <= {"-", ":", " "}]
            cells = lambda r: [c.strip() for c in r.strip().strip("|").split("|")]  # noqa: E731
            out.append("<table><tr>" + "".join(f"<th>{inline(c)}</th>" for c in cells(head)) + "</tr>"
                       + "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in cells(r)) + "</tr>" for r in body)
                       + "</table>")
            table.clear()

    for line in text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        heading = re.match(r"(#+) (.*)", line)
        if heading:
            level = min(len(heading.group(1)) + 1, 4)   # the page's own title is the h1
            out.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
    flush()
    return "\n".join(out)


def _audio(path: Path | str) -> str:
    return f'<audio controls preload="metadata" src="{html.escape(Path(path).as_posix())}"></audio>'


def _sounds_html(sets: dict) -> str:
    parts = []
    if sets["reconstruction"]:
        heads = ["recording"] + sets["inverters"]
        parts.append("<h4>Test notes and their reconstructions</h4><table><tr><th>style</th><th>note</th>"
                     + "".join(f"<th>{html.escape(h)}</th>" for h in heads) + "</tr>"
                     + "".join(f"<tr><td>{html.escape(r['style'])}</td><td>{html.escape(r['note'])}</td>"
                               + "".join(f"<td>{_audio(r['files'][h])}</td>" for h in heads) + "</tr>"
                               for r in sets["reconstruction"]) + "</table>")
    ranges = list(sets["generation"][0]["files"]) if sets["generation"] else []
    parts.append(f"<h4>Random conditional notes (z from the prior, through {html.escape(sets['generated_with'])})"
                 "</h4><table><tr><th>style</th>" + "".join(f"<th>{html.escape(r)}</th>" for r in ranges) + "</tr>"
                 + "".join(f"<tr><td>{html.escape(g['style'])}</td>"
                           + "".join(f"<td>{_audio(g['files'][r])}<br><span class=note>{html.escape(g['notes'][r])}"
                                     "</span></td>" for r in ranges) + "</tr>" for g in sets["generation"])
                 + "</table>")
    if sets["mixes"]:
        parts.append("<h4>Style mixes</h4><table><tr><th>mix</th><th></th><th>notes</th></tr>"
                     + "".join(f"<tr><td>{html.escape(m['label'])}</td><td>{_audio(m['file'])}</td>"
                               f"<td class=note>{html.escape(m['notes'])}</td></tr>" for m in sets["mixes"])
                     + "</table>")
    return "\n".join(parts)


def _animation_html(name: str, model: Path, history_path: Path | None, gifs: list[Path],
                    match: tuple[int | None, float], history: LatentHistory | None) -> str:
    if history_path is None or history is None:
        return (f"<p class=note>No latent history for <code>{html.escape(str(model))}</code>: it was trained "
                f"without one (<code>waeserver train</code> keeps <code>{HISTORY_FILE}</code> in the run folder "
                "since the study page exists); <code>--latent-history</code> points at one.</p>")
    epoch, worst = match
    if epoch is not None:
        verdict = (f"This model's encoder gives the points of epoch {epoch} of this history "
                   f"(largest difference {worst:.1e}): the animation is its own training.")
    elif np.isfinite(worst):
        verdict = (f"This model's encoder matches none of its epochs (closest largest difference {worst:.3f}): "
                   "the history comes from another training run than this model's weights.")
    else:
        verdict = "The history was recorded on other notes or styles than this dataset's."
    caption = (f"{len(history.z[0])} notes (fixed, every split), {len(history.epoch)} snapshots (epochs "
               f"{int(history.epoch[0])}-{int(history.epoch[-1])}) from <code>{html.escape(str(history_path))}</code>"
               f"{_run_summary(history_path.parent)}. {verdict} "
               "Alpha is the Fader discriminator's weight at that epoch.")
    return ("".join(f'<figure><img src="{html.escape(g.name)}" alt="{html.escape(name)}: {g.stem}"></figure>'
                    for g in gifs) + f"<p class=note>{caption}</p>")


def _run_summary(run: Path) -> str:
    """What the training run that recorded a history was, from its ``model.yaml`` (empty without one)."""
    card = run / "model.yaml"
    meta = read_mapping(card, "run card", StudyPageError) if card.is_file() else {}
    training = meta.get("training") if isinstance(meta.get("training"), dict) else {}
    if not training:
        return ""
    return html.escape(f" (a {meta.get('variant')} run: {training.get('epochs_run')} epochs, seed "
                       f"{training.get('seed')}, best validation reconstruction {training.get('best_valid_recon')} "
                       f"at epoch {training.get('best_epoch')})")


def write_study_page(report: dict, models: list[str | Path], data_dir: str | Path, out_dir: str | Path,
                     device: str | torch.device = "cpu", histories: list[Path | None] | None = None,
                     max_frames: int = 40, seed: int = 0, notes: int = NOTES_PER_SET) -> Path:
    """Animations, sound sets and ``index.html`` for the models ``evaluate`` reported on (in its
    order); returns the page's path. ``histories`` (one per model, None to look) overrides where
    latent histories are found; ``notes`` are played per generated set."""
    out, ds = Path(out_dir), NoteDataset(data_dir)
    names = list(report["variants"])
    if len(names) != len(models):
        raise StudyPageError(f"the report names {len(names)} models, {len(models)} given")
    histories = list(histories) if histories is not None else [None] * len(models)
    if len(histories) != len(models):
        raise StudyPageError(f"{len(histories)} latent histories given for {len(models)} models")
    device = pick_device(device)
    sections = []
    for name, model, explicit in zip(names, map(Path, models), histories):
        voice = load_voice(model, device)
        history_path = find_history(model, explicit)
        history, gifs, match = None, [], (None, float("inf"))
        if history_path is not None:
            history = LatentHistory.load(history_path)
            match = history_match(history, voice, ds)
            gifs = animate(history, out, name, max_frames=max_frames, seed=seed)
        sets = sound_sets(voice, ds, out, name, seed, notes)
        sections.append(f"<h3>{html.escape(name)} <span class=note>(<code>{html.escape(str(model))}</code>)</span>"
                        f"</h3><h4>The latent space during training</h4>"
                        + _animation_html(name, model, history_path, gifs, match, history)
                        + "<h4>Sound sets</h4>" + _sounds_html(sets))
    ablation = (out / "ablation.md").read_text() if (out / "ablation.md").is_file() else ""
    figures = "".join(f'<figure><img src="{html.escape(f)}" alt="{html.escape(f)}"><figcaption>'
                      f"{html.escape(f)}</figcaption></figure>" for f in report.get("figures", []))
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>waeserver study: "
            f"{html.escape(', '.join(names))} on {html.escape(Path(report['data']).name)}</title>"
            f"<style>{STYLE}</style></head><body>\n<h1>The study: {html.escape(', '.join(names))} on "
            f"<code>{html.escape(Path(report['data']).name)}</code></h1>\n<p class=note>Written by "
            "<code>waeserver evaluate</code>; every number is in <a href=report.json>report.json</a>, the tables in "
            "<a href=ablation.md>ablation.md</a>. Sound files are Ogg Vorbis, each scaled to one peak level.</p>\n"
            f"{markdown_html(ablation)}\n<h2>Figures</h2>\n{figures}\n"
            f"<h2>Models: the latent space over training, and sound sets</h2>\n" + "\n".join(sections)
            + "\n</body></html>\n")
    path = out / "index.html"
    path.write_text(page)
    log.info("study page: %s", path)
    return path
