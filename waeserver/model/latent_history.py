"""The latent space over training: a fixed subset of notes encoded at every epoch, and its animations.

During ``train`` a :class:`LatentRecorder` keeps, in the run folder, ``latent_history.npz``::

    z         [E, N, D] float32   the notes' latent points after each epoch (row 0: before training)
    epoch     [E]       int64     0, 1, 2, ...
    alpha     [E]       float32   the Fader weight at the end of that epoch (0 for variants without it)
    index     [N]       int64     the notes' rows in the dataset's manifest
    pitch, pitch_class, octave, style, velocity  [N] int64, as ``NoteDataset.labels``
    styles    [S]       str       style names, in model order

With the default 240 notes, 3 dimensions and 81 rows it is about 250 kB. The notes are drawn
once (seeded) from every split, the same number per style where the styles allow it, so the
picture is not one style's.

:func:`animate` turns a history into two GIFs: the raw latent (first three dimensions, fixed
axes, the view turning slowly) and a t-SNE of it (each frame's embedding started from the
previous one, so points move instead of jumping), each frame three panels coloured by semitone,
octave and style with legends, and the epoch and alpha in its title.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from waeserver.data.dataset import NoteDataset
from waeserver.dsp.pitch import N_OCTAVES, N_PITCH_CLASSES, NOTE_NAMES

log = logging.getLogger(__name__)

HISTORY_FILE = "latent_history.npz"
N_NOTES = 240
LABEL_KEYS = ("pitch", "pitch_class", "octave", "style", "velocity")
COLOURINGS = (("pitch_class", "semitone"), ("octave", "octave"), ("style", "style"))


def pick_notes(ds: NoteDataset, n: int = N_NOTES, seed: int = 0) -> np.ndarray:
    """Up to ``n`` manifest rows ``[N]`` (sorted), about ``n / S`` per style, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    style = ds.labels()["style"]
    per_style = [rng.permutation(np.flatnonzero(style == s)) for s in range(len(ds.styles))]
    picked: list[int] = []
    # round-robin over the styles, so a style with few notes gives all it has and the others fill up
    for rank in range(max((len(p) for p in per_style), default=0)):
        picked += [int(p[rank]) for p in per_style if rank < len(p)]
        if len(picked) >= n:
            break
    return np.sort(np.array(picked[:n], dtype=np.int64))


@dataclass
class LatentHistory:
    """A read-back ``latent_history.npz`` (shapes in the module docstring)."""

    z: np.ndarray
    epoch: np.ndarray
    alpha: np.ndarray
    index: np.ndarray
    labels: dict[str, np.ndarray]
    styles: list[str]

    @classmethod
    def load(cls, path: str | Path) -> LatentHistory:
        with np.load(Path(path), allow_pickle=False) as f:
            return cls(z=f["z"], epoch=f["epoch"], alpha=f["alpha"], index=f["index"],
                       labels={k: f[k] for k in LABEL_KEYS}, styles=[str(s) for s in f["styles"]])

    def save(self, path: Path) -> None:
        """Written to a temporary file, then renamed: a killed run leaves the last whole history."""
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, z=self.z.astype(np.float32), epoch=self.epoch.astype(np.int64),
                 alpha=self.alpha.astype(np.float32), index=self.index, styles=np.array(self.styles),
                 **self.labels)
        tmp.replace(path)


class LatentRecorder:
    """Encodes the same notes after every epoch and keeps ``RUN/latent_history.npz`` up to date.

    ``feats`` are the dataset's log-mels ``[rows, M, F]``. A fresh history records row 0 (the
    untrained encoder) at once; on resume the rows up to the checkpoint's epoch are kept.
    """

    def __init__(self, ds: NoteDataset, feats: np.ndarray, run: Path, encoder: torch.nn.Module,
                 device: torch.device, resume_epoch: int = 0, n: int = N_NOTES, seed: int = 0):
        self.path = Path(run) / HISTORY_FILE
        index = pick_notes(ds, n, seed)
        self.mel = torch.from_numpy(np.ascontiguousarray(feats[index])).to(device)
        kept = None
        if resume_epoch > 0 and self.path.is_file():
            kept = LatentHistory.load(self.path)
            if not np.array_equal(kept.index, index):
                log.warning("%s holds other notes than this dataset gives; starting it again", self.path)
                kept = None
        if kept is None:
            labels = ds.labels(index)
            self.history = LatentHistory(np.zeros((0, len(index), 0), np.float32), np.zeros(0, np.int64),
                                         np.zeros(0, np.float32), index, labels, list(ds.styles))
            self.record(encoder, 0, 0.0)
        else:
            keep = kept.epoch <= resume_epoch
            kept.z, kept.epoch, kept.alpha = kept.z[keep], kept.epoch[keep], kept.alpha[keep]
            self.history = kept

    @torch.no_grad()
    def record(self, encoder: torch.nn.Module, epoch: int, alpha: float) -> None:
        """Encode the notes (eval mode, then the encoder's mode as it was) and save the history."""
        was_training = encoder.training
        encoder.eval()
        z = torch.cat([encoder(self.mel[i:i + 128]) for i in range(0, len(self.mel), 128)]).cpu().numpy()
        encoder.train(was_training)
        h = self.history
        h.z = np.concatenate([h.z, z[None]]) if len(h.epoch) else z[None].astype(np.float32)
        h.epoch = np.append(h.epoch, epoch)
        h.alpha = np.append(h.alpha, np.float32(alpha))
        h.save(self.path)


def _frames(n_epochs: int, max_frames: int) -> np.ndarray:
    """Which history rows become frames: all, or ``max_frames`` spread evenly, first and last kept."""
    if n_epochs <= max_frames:
        return np.arange(n_epochs)
    return np.unique(np.round(np.linspace(0, n_epochs - 1, max_frames)).astype(int))


def tsne_perplexity(n: int) -> float:
    """The t-SNE perplexity for ``n`` points: sklearn's 30, less for a handful (it must stay under n)."""
    return min(30.0, max(2.0, (n - 1) / 3))


def tsne_paths(z: np.ndarray, seed: int = 0) -> np.ndarray:
    """``[E, N, D]`` -> ``[E, N, 2]``: a t-SNE per frame, each started from the one before
    (the first from PCA), so the picture moves smoothly between frames."""
    from sklearn.manifold import TSNE

    perplexity = tsne_perplexity(z.shape[1])
    out, init = [], "pca"
    for frame in z:
        first = isinstance(init, str)
        # a frame started from the last one needs no early exaggeration, which would tear it apart
        emb = TSNE(n_components=2, init=init, random_state=seed, perplexity=perplexity,
                   early_exaggeration=12.0 if first else 1.0,
                   max_iter=500 if first else 300).fit_transform(frame.astype(np.float64))
        # t-SNE grows or shrinks the cloud from frame to frame; rescaling keeps the start comparable
        emb = (emb - emb.mean(0)) / (emb.std() + 1e-9)
        out.append(emb)
        init = emb * 1e-2  # sklearn wants a small initial spread (std about 1e-4 to 1e-2)
    return np.stack(out)


def palettes(n_styles: int) -> dict[str, np.ndarray]:
    """One RGBA colour per class ``[C, 4]``: pitch classes round the hue circle, octaves dark to
    light, styles from a qualitative map; the same in every frame and in the legends."""
    from matplotlib import colormaps

    return {"pitch_class": colormaps["hsv"](np.arange(N_PITCH_CLASSES) / N_PITCH_CLASSES),
            "octave": colormaps["viridis"](np.linspace(0, 1, N_OCTAVES)),
            # tab20's strong colours first, its pale ones only past ten styles
            "style": colormaps["tab20"](np.r_[0:20:2, 1:20:2][np.arange(n_styles) % 20])}


def _legend_handles(key: str, values: np.ndarray, styles: list[str], colours: np.ndarray) -> list:
    from matplotlib.lines import Line2D

    names = {"pitch_class": lambda v: NOTE_NAMES[v], "octave": lambda v: f"octave {v}",
             "style": lambda v: styles[v]}[key]
    return [Line2D([], [], ls="", marker="o", ms=4, color=colours[v], label=names(int(v))) for v in np.unique(values)]


def _write_gif(path: Path, coords: np.ndarray, history: LatentHistory, rows: np.ndarray, heading: str,
               fps: float, dpi: int) -> None:
    """One GIF of ``coords [frames, N, 2 or 3]`` (3: a 3-D view on fixed axes that turns through
    90 degrees), three panels coloured by semitone, octave and style; the last frame held a second."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    three_d = coords.shape[-1] == 3
    lo, hi = np.percentile(coords.reshape(-1, coords.shape[-1]), [0.5, 99.5], axis=0)
    lo, hi = lo - 0.08 * (hi - lo + 1e-9), hi + 0.08 * (hi - lo + 1e-9)
    colours = palettes(len(history.styles))
    fig = plt.figure(figsize=(11, 4.6), dpi=dpi)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.86, bottom=0.25, wspace=0.08)
    axes = []
    for c, (key, label) in enumerate(COLOURINGS):
        ax = fig.add_subplot(1, 3, c + 1, projection="3d" if three_d else None)
        ax.set_title(f"by {label}", fontsize=8)
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        if three_d:
            ax.set_zlim(lo[2], hi[2])
            for axis in ("x", "y", "z"):
                getattr(ax, f"set_{axis}label")(f"z{'xyz'.index(axis) + 1}", fontsize=7, labelpad=-8)
            ax.tick_params(labelsize=5, pad=-3)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.legend(handles=_legend_handles(key, history.labels[key], history.styles, colours[key]),
                  loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=6 if key == "pitch_class" else 3,
                  fontsize=6, frameon=False, handletextpad=0.1, columnspacing=0.6)
        axes.append((ax, colours[key][history.labels[key]]))
    title = fig.suptitle("", fontsize=10)
    frames, scatters = [], []
    for frame, row in enumerate(rows):
        for s in scatters:
            s.remove()
        p = coords[frame]
        if three_d:
            scatters = [ax.scatter(p[:, 0], p[:, 1], p[:, 2], c=c, s=6, depthshade=False) for ax, c in axes]
            for ax, _ in axes:
                ax.view_init(elev=22, azim=-60 + 90 * frame / max(1, len(rows) - 1))
        else:
            scatters = [ax.scatter(p[:, 0], p[:, 1], c=c, s=6) for ax, c in axes]
            # t-SNE's axes mean nothing: each frame framed on its own points, all of them shown
            low, high = p.min(0), p.max(0)
            for ax, _ in axes:
                ax.set_xlim(low[0] - 0.05 * (high[0] - low[0]), high[0] + 0.05 * (high[0] - low[0]))
                ax.set_ylim(low[1] - 0.05 * (high[1] - low[1]), high[1] + 0.05 * (high[1] - low[1]))
        title.set_text(f"{heading}, epoch {int(history.epoch[row])} of {int(history.epoch[-1])}, "
                       f"alpha = {float(history.alpha[row]):.2f}")
        fig.canvas.draw()
        frames.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]).quantize(
            colors=128, method=Image.Quantize.MEDIANCUT))
    plt.close(fig)
    step = int(round(1000 / fps))
    frames[0].save(path, save_all=True, append_images=frames[1:], loop=0, optimize=True,
                   duration=[step] * (len(frames) - 1) + [step + 1000])


def animate(history: LatentHistory, out_dir: str | Path, name: str, max_frames: int = 40, fps: float = 4.0,
            seed: int = 0, dpi: int = 72, title: str = "") -> list[Path]:
    """Write ``latent-NAME-raw.gif`` and ``latent-NAME-tsne.gif`` into ``out_dir``; returns their paths.

    ``max_frames`` rows of the history (evenly spread, first and last kept) become frames.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = _frames(len(history.epoch), max_frames)
    z = history.z[rows]
    raw = np.pad(z, ((0, 0), (0, 0), (0, max(0, 3 - z.shape[2]))))[:, :, :3]
    paths = []
    for view, coords, what in (("raw", raw, "z (first 3 dims)"), ("tsne", tsne_paths(z, seed), "t-SNE of z")):
        path = out / f"latent-{name}-{view}.gif"
        _write_gif(path, coords, history, rows, f"{title or name}: {what}", fps, dpi)
        log.info("%s: %d frames, %.0f kB", path, len(rows), path.stat().st_size / 1e3)
        paths.append(path)
    return paths
