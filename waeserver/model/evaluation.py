"""``waeserver evaluate``: the study's metrics and figures for one or more trained variants.

For a dataset and a list of trained runs, writes into REPORT::

    classifiers.safetensors   the attribute classifiers (the judges), cached for the same dataset
    classifiers.yaml          what they were trained on and their test accuracy
    report.json               every number below, per variant
    ablation.md               the variants side by side
    reconstruction-<variant>.png, latent.png

The metrics, in the order reported:

1. Judges: one classifier (shared trunk, three heads: pitch class, octave, style) trained on the
   real log-mels of the train split; its test accuracy says how far its verdicts can be trusted.
2. Reconstruction of the test split: log-mel distance (mean |difference| of natural-log mels) and
   spectral convergence of the mel magnitudes ``exp(log-mel)`` (inverting the mel filterbank for
   every note first would cost minutes of CPU and add the inverse's own error).
3. Conditional generation: z drawn from the prior, random note targets (octaves 3-4, and the
   whole pitch range of the dataset), each style in turn; the judges' accuracy on the results.
4. Style transfer (beyond the study's list, because it shows what the discriminator buys): each
   test note's own z decoded with another style; the judges' accuracy on the target style.
5. Latent disentanglement: a fresh classifier trained to read the style from the train split's z,
   tested on the test split's z (chance is 1 / number of styles), and how each z dimension goes
   with each attribute (Pearson |r| for pitch, octave and velocity; the correlation ratio eta for
   the categorical pitch class and style).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from waeserver.data.dataset import NoteDataset
from waeserver.dsp.pitch import N_OCTAVES, N_PITCH_CLASSES, octave_of, pitch_class
from waeserver.dsp.spectral import log_mel_distance, spectral_convergence
from waeserver.model.devices import pick_device
from waeserver.model.training import load_wae
from waeserver.model.wae import WAE, style_onehot
from waeserver.settings import read_mapping

log = logging.getLogger(__name__)

ATTRIBUTES = ("pitch_class", "octave", "style")
GEN_PER_STYLE = 100
CLASSIFIER_EPOCHS = 40   # the judges' training epochs (best by validation accuracy)
SPECTRUM_FRAME = 24  # the frame whose spectrum is overlaid in the reconstruction figure (~0.28 s in)


class EvaluateError(ValueError):
    """An evaluation request that cannot be run, with the reason."""


class AttributeClassifier(nn.Module):
    """Log-mel ``[B,M,F]`` -> logits ``{"pitch_class": [B,12], "octave": [B,9], "style": [B,S]}``.

    Mel bands are channels, frames are time; mean- and max-pooling over time make it indifferent
    to where in the note a feature shows.
    """

    def __init__(self, n_mels: int, n_styles: int, offset: float, scale: float, channels: int = 128):
        super().__init__()
        self.offset, self.scale = offset, scale
        self.trunk = nn.Sequential(
            nn.Conv1d(n_mels, channels, 3, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm1d(channels), nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1), nn.BatchNorm1d(channels), nn.ReLU())
        self.dropout = nn.Dropout(0.3)
        self.heads = nn.ModuleDict({"pitch_class": nn.Linear(2 * channels, N_PITCH_CLASSES),
                                    "octave": nn.Linear(2 * channels, N_OCTAVES),
                                    "style": nn.Linear(2 * channels, n_styles)})

    def forward(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.trunk((mel - self.offset) / self.scale)
        h = self.dropout(torch.cat([h.mean(-1), h.amax(-1)], dim=1))
        return {name: head(h) for name, head in self.heads.items()}


def _batched(fn, *tensors: torch.Tensor, batch: int = 128) -> list:
    return [fn(*(t[i:i + batch] for t in tensors)) for i in range(0, len(tensors[0]), batch)]


@torch.no_grad()
def classify(clf: AttributeClassifier, mel: torch.Tensor) -> dict[str, np.ndarray]:
    """Predicted class per attribute for log-mels ``[N,M,F]``."""
    clf.eval()
    parts = _batched(lambda m: {k: v.argmax(1) for k, v in clf(m).items()}, mel)
    return {k: torch.cat([p[k] for p in parts]).cpu().numpy() for k in ATTRIBUTES}


def train_classifiers(ds: NoteDataset, device: torch.device, epochs: int = CLASSIFIER_EPOCHS, seed: int = 0,
                      progress: bool = True) -> tuple[AttributeClassifier, dict]:
    """Train the judges on the train split (best epoch by validation accuracy); returns (model, test accuracy)."""
    feats = np.asarray(ds.features())
    tr, va, te = ds.indices("train"), ds.indices("valid"), ds.indices("test")
    torch.manual_seed(seed)
    clf = AttributeClassifier(ds.spectral.n_mels, len(ds.styles), float(feats[tr].mean()),
                              float(feats[tr].std())).to(device)
    x = torch.from_numpy(np.ascontiguousarray(feats[tr])).to(device)
    y = {k: torch.from_numpy(v).to(device) for k, v in ds.labels(tr).items()}
    x_va = torch.from_numpy(np.ascontiguousarray(feats[va])).to(device)
    y_va = ds.labels(va)
    opt = torch.optim.AdamW(clf.parameters(), lr=2e-3, weight_decay=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * max(1, len(tr) // 32))
    gen = torch.Generator().manual_seed(seed)
    best, best_state = -1.0, None
    for _ in tqdm(range(epochs), desc="attribute classifiers", unit="epoch", disable=not progress):
        clf.train()
        order = torch.randperm(len(tr), generator=gen)
        for b in range(max(1, len(tr) // 32)):
            sel = order[b * 32:(b + 1) * 32].to(device)
            # a random gain in log space: the judges should not key on loudness alone
            mel = x[sel] + torch.empty(len(sel), 1, 1, device=device).uniform_(-0.5, 0.5)
            logits = clf(mel)
            loss = sum(nn.functional.cross_entropy(logits[k], y[k][sel]) for k in ATTRIBUTES)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        pred = classify(clf, x_va)
        score = float(np.mean([np.mean(pred[k] == y_va[k]) for k in ATTRIBUTES]))
        if score >= best:
            best, best_state = score, {k: v.detach().clone() for k, v in clf.state_dict().items()}
    clf.load_state_dict(best_state)
    pred = classify(clf, torch.from_numpy(np.ascontiguousarray(feats[te])).to(device))
    y_te = ds.labels(te)
    accuracy = {k: round(float(np.mean(pred[k] == y_te[k])), 4) for k in ATTRIBUTES}
    return clf.eval(), accuracy


def _dataset_digest(ds: NoteDataset) -> str:
    return hashlib.sha1((ds.root / "manifest.csv").read_bytes()).hexdigest()


def load_or_train_classifiers(ds: NoteDataset, report: Path, device: torch.device,
                              progress: bool = True,
                              epochs: int = CLASSIFIER_EPOCHS) -> tuple[AttributeClassifier, dict]:
    """The judges cached in REPORT for this dataset, or freshly trained (and cached)."""
    weights, card = report / "classifiers.safetensors", report / "classifiers.yaml"
    digest = _dataset_digest(ds)
    if weights.is_file() and card.is_file():
        meta = read_mapping(card, "classifier cache")
        if meta.get("manifest_sha1") == digest:
            clf = AttributeClassifier(ds.spectral.n_mels, len(ds.styles), meta["offset"], meta["scale"])
            clf.load_state_dict(load_file(str(weights)))
            log.info("attribute classifiers from the cache in %s", report)
            return clf.to(device).eval(), meta["test_accuracy"]
    clf, accuracy = train_classifiers(ds, device, epochs=epochs, progress=progress)
    save_file({k: v.cpu().contiguous() for k, v in clf.state_dict().items()}, str(weights))
    card.write_text(yaml.safe_dump({"data": str(ds.root.resolve()), "manifest_sha1": digest,
                                    "styles": list(ds.styles), "offset": clf.offset, "scale": clf.scale,
                                    "epochs": epochs, "test_accuracy": accuracy}, sort_keys=False))
    return clf, accuracy


@torch.no_grad()
def encode_decode(wae: WAE, mel: torch.Tensor, labels: dict[str, np.ndarray],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(reconstructions ``[N,M,F]``, z ``[N,D]``) of real notes, decoded with their own labels."""
    pitch = torch.from_numpy(labels["pitch"]).to(device)
    style = style_onehot(torch.from_numpy(labels["style"]).to(device), wae.cfg.n_styles)
    vel = torch.from_numpy(labels["velocity"]).float().div(127).to(device)
    out = _batched(lambda m, p, s, v: wae(m, p, s, v), mel, pitch, style, vel)
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


@torch.no_grad()
def reconstruction_metrics(mel: torch.Tensor, recon: torch.Tensor) -> dict:
    """Mean log-mel distance and spectral convergence of the mel magnitudes, over test notes ``[N,M,F]``."""
    lmd = log_mel_distance(recon, mel)
    sc = spectral_convergence(torch.exp(recon), torch.exp(mel))
    return {"log_mel_distance": round(float(lmd.mean()), 4), "spectral_convergence": round(float(sc.mean()), 4)}


@torch.no_grad()
def generation_metrics(wae: WAE, clf: AttributeClassifier, ds: NoteDataset, device: torch.device,
                       seed: int = 0, per_style: int = GEN_PER_STYLE) -> dict:
    """Judges' accuracy on notes decoded from prior z, per target range, overall and per style."""
    pitches = [r["pitch"] for r in ds.rows]
    ranges = {"octaves_3_4": (48, 71), "full_range": (min(pitches), max(pitches))}
    gen = torch.Generator().manual_seed(seed)
    result = {}
    for name, (low, high) in ranges.items():
        correct = {k: [] for k in ATTRIBUTES}
        per_style_acc = {}
        for s in range(len(ds.styles)):
            pitch = torch.randint(low, high + 1, (per_style,), generator=gen)
            vel = torch.tensor([40, 80, 120], dtype=torch.float32)[torch.randint(0, 3, (per_style,), generator=gen)]
            z = torch.randn(per_style, wae.cfg.latent, generator=gen)
            style = torch.full((per_style,), s, dtype=torch.int64)
            mel = wae.decoder(z.to(device), pitch.to(device), style_onehot(style, wae.cfg.n_styles).to(device),
                              (vel / 127).to(device))
            pred = classify(clf, mel)
            truth = {"pitch_class": pitch_class(pitch).numpy(), "octave": octave_of(pitch).numpy(),
                     "style": style.numpy()}
            for k in ATTRIBUTES:
                correct[k].append(pred[k] == truth[k])
            per_style_acc[ds.styles[s]] = round(float(np.mean(pred["style"] == s)), 4)
        result[name] = {k: round(float(np.mean(np.concatenate(v))), 4) for k, v in correct.items()}
        result[name]["style_per_style"] = per_style_acc
        result[name]["pitch_range"] = [low, high]
    return result


@torch.no_grad()
def transfer_metrics(wae: WAE, clf: AttributeClassifier, z: torch.Tensor, labels: dict[str, np.ndarray],
                     n_styles: int, device: torch.device, seed: int = 0) -> dict:
    """Style transfer: each test note's own z, pitch and velocity, decoded with another style
    (drawn at random); the judges' accuracy on the target style and on the note's pitch class and octave.

    A latent that still carries the source style pulls the result back towards it, which is
    what the Fader discriminator is there to prevent.
    """
    gen = torch.Generator().manual_seed(seed + 7)
    source = torch.from_numpy(labels["style"])
    target = (source + torch.randint(1, max(2, n_styles), (len(source),), generator=gen)) % n_styles
    pitch = torch.from_numpy(labels["pitch"])
    vel = torch.from_numpy(labels["velocity"]).float().div(127)
    mel = torch.cat(_batched(lambda zz, p, s, v: wae.decoder(zz, p, s, v), z, pitch.to(device),
                             style_onehot(target, wae.cfg.n_styles).to(device), vel.to(device)))
    pred = classify(clf, mel)
    return {"style": round(float(np.mean(pred["style"] == target.numpy())), 4),
            "source_style": round(float(np.mean(pred["style"] == source.numpy())), 4),
            "pitch_class": round(float(np.mean(pred["pitch_class"] == labels["pitch_class"])), 4),
            "octave": round(float(np.mean(pred["octave"] == labels["octave"])), 4)}


def latent_style_accuracy(z_train: np.ndarray, s_train: np.ndarray, z_test: np.ndarray, s_test: np.ndarray,
                          n_styles: int, seed: int = 0, epochs: int = 300) -> float:
    """Test accuracy of a fresh MLP (like the Fader discriminator) reading the style from z."""
    torch.manual_seed(seed)
    mean, std = z_train.mean(0), z_train.std(0) + 1e-6
    xt = torch.from_numpy((z_train - mean) / std).float()
    yt = torch.from_numpy(s_train)
    net = nn.Sequential(nn.Linear(xt.shape[1], 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, n_styles))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        loss = nn.functional.cross_entropy(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        pred = net(torch.from_numpy((z_test - mean) / std).float()).argmax(1).numpy()
    return float(np.mean(pred == s_test))


def correlation_ratio(categories: np.ndarray, values: np.ndarray) -> float:
    """eta: the share of the spread of ``values`` explained by ``categories`` (0 none, 1 all), as a root."""
    total = np.sum((values - values.mean()) ** 2)
    if total == 0:
        return 0.0
    between = sum(np.sum(categories == c) * (values[categories == c].mean() - values.mean()) ** 2
                  for c in np.unique(categories))
    return float(np.sqrt(between / total))


def latent_correlations(z: np.ndarray, labels: dict[str, np.ndarray]) -> dict[str, list[float]]:
    """Per attribute, one number per z dimension: Pearson |r| (pitch, octave, velocity) or eta (pitch class, style)."""
    out = {}
    for key in ("pitch", "octave", "velocity"):
        y = labels[key].astype(np.float64)
        out[key] = [round(abs(float(np.corrcoef(z[:, d], y)[0, 1])) if y.std() > 0 and z[:, d].std() > 0 else 0.0, 4)
                    for d in range(z.shape[1])]
    for key in ("pitch_class", "style"):
        out[key] = [round(correlation_ratio(labels[key], z[:, d]), 4) for d in range(z.shape[1])]
    return out


def _figure_reconstructions(path: Path, variant: str, ds: NoteDataset, mel: np.ndarray, recon: np.ndarray,
                            picks: list[int], labels: dict[str, np.ndarray]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 2.2 * len(picks)), squeeze=False)
    lo, hi = float(mel[picks].min()), float(mel[picks].max())
    for r, i in enumerate(picks):
        title = f"{ds.styles[labels['style'][i]]} {labels['pitch'][i]} v{labels['velocity'][i]}"
        for c, (img, name) in enumerate(((mel[i], "test"), (recon[i], "reconstruction"))):
            ax = axes[r, c]
            ax.imshow(img, origin="lower", aspect="auto", cmap="magma", vmin=lo, vmax=hi)
            ax.axvline(SPECTRUM_FRAME, color="c", lw=0.8, ls="--")
            ax.set_title(f"{name}: {title}", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = axes[r, 2]
        ax.plot(mel[i][:, SPECTRUM_FRAME], lw=0.9, label="test")
        ax.plot(recon[i][:, SPECTRUM_FRAME], lw=0.9, label="reconstruction")
        ax.set_title(f"frame {SPECTRUM_FRAME} spectrum (log-mel)", fontsize=7)
        ax.tick_params(labelsize=6)
        if r == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"{variant} on {ds.root.name}: test notes and reconstructions", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _figure_latents(path: Path, ds: NoteDataset, latents: dict[str, tuple[np.ndarray, dict]], seed: int = 0) -> None:
    """One row per variant: raw z (first 3 dims) then t-SNE, each coloured by semitone, octave, style."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    from waeserver.model.latent_history import tsne_perplexity

    colourings = (("pitch_class", "semitone", "hsv"), ("octave", "octave", "viridis"), ("style", "style", "tab20"))
    fig = plt.figure(figsize=(18, 3.0 * len(latents)))
    for r, (variant, (z, labels)) in enumerate(latents.items()):
        emb = TSNE(n_components=2, init="pca", random_state=seed,
                   perplexity=tsne_perplexity(len(z))).fit_transform(z)
        raw = np.pad(z, ((0, 0), (0, max(0, 3 - z.shape[1]))))[:, :3]
        for c, (key, name, cmap) in enumerate(colourings):
            ax = fig.add_subplot(len(latents), 6, r * 6 + c + 1, projection="3d")
            ax.scatter(raw[:, 0], raw[:, 1], raw[:, 2], c=labels[key], cmap=cmap, s=3)
            ax.set_title(f"{variant}: z by {name}", fontsize=7)
            ax.tick_params(labelsize=5)
            ax2 = fig.add_subplot(len(latents), 6, r * 6 + c + 4)
            ax2.scatter(emb[:, 0], emb[:, 1], c=labels[key], cmap=cmap, s=3)
            ax2.set_title(f"{variant}: t-SNE by {name}", fontsize=7)
            ax2.set_xticks([])
            ax2.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def evaluate(runs: list[str | Path], data_dir: str | Path, out_dir: str | Path, device: str = "auto",
             progress: bool = True, seed: int = 0, per_style: int = GEN_PER_STYLE,
             classifier_epochs: int = CLASSIFIER_EPOCHS, load=load_wae) -> dict:
    """Evaluate trained runs on a dataset; writes REPORT and returns the report dict.

    ``load(path, device) -> (WAE, meta)`` reads each run: a training folder by default
    (``waeserver.sound.bundle.load_wae_or_bundle`` reads bundles too).

    ``per_style`` notes are generated per style and target range; the judges train for
    ``classifier_epochs`` unless REPORT already caches them for this dataset.
    """
    ds = NoteDataset(data_dir)
    dev = pick_device(device)
    models = []
    for run in runs:
        wae, meta = load(run, dev)
        if list(meta.get("styles", [])) != list(ds.styles):
            raise EvaluateError(f"{run} was trained on styles {meta.get('styles')}, {ds.root} has {ds.styles}")
        if meta.get("spectral") != ds.spectral.to_dict():
            raise EvaluateError(f"{run} was trained with other spectral settings than {ds.root}")
        models.append((Path(run), wae, meta))
    # variants name the rows; when one variant comes twice, the run folders do
    names = [m[2].get("variant", m[0].name) for m in models]
    if len(set(names)) != len(names):
        names = [m[0].name for m in models]
    if len(set(names)) != len(names):
        raise EvaluateError("two runs of the same name: " + ", ".join(str(m[0]) for m in models))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    clf, judge_accuracy = load_or_train_classifiers(ds, out, dev, progress, classifier_epochs)
    feats = np.asarray(ds.features())
    tr, te = ds.indices("train"), ds.indices("test")
    mel_te = torch.from_numpy(np.ascontiguousarray(feats[te])).to(dev)
    mel_tr = torch.from_numpy(np.ascontiguousarray(feats[tr])).to(dev)
    lab_te, lab_tr = ds.labels(te), ds.labels(tr)
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(te), size=min(4, len(te)), replace=False).tolist())
    # References for "style from z": chance, the commonest test style, and what the note alone
    # (pitch and velocity, which a latent may carry) tells about the style.
    note_tr = np.stack([lab_tr["pitch"], lab_tr["velocity"]], axis=1).astype(np.float64)
    note_te = np.stack([lab_te["pitch"], lab_te["velocity"]], axis=1).astype(np.float64)
    report = {"data": str(ds.root.resolve()), "styles": list(ds.styles), "n_test": int(len(te)),
              "classifiers_test_accuracy": judge_accuracy, "chance": {
                  "pitch_class": round(1 / N_PITCH_CLASSES, 4), "octave": round(1 / N_OCTAVES, 4),
                  "style": round(1 / len(ds.styles), 4)},
              "style_majority_share": round(float(np.bincount(lab_te["style"]).max() / len(te)), 4),
              "style_from_note_only": round(latent_style_accuracy(note_tr, lab_tr["style"], note_te, lab_te["style"],
                                                                  len(ds.styles), seed), 4),
              "variants": {}}
    latents, figures = {}, []
    for name, (run, wae, meta) in tqdm(list(zip(names, models)), desc="variants", disable=not progress):
        recon, z_te = encode_decode(wae, mel_te, lab_te, dev)
        _, z_tr = encode_decode(wae, mel_tr, lab_tr, dev)
        z_te_np, z_tr_np = z_te.cpu().numpy(), z_tr.cpu().numpy()
        entry = {"run": str(run), "variant": meta.get("variant"), "training": meta.get("training", {}),
                 "reconstruction": reconstruction_metrics(mel_te, recon),
                 "generation": generation_metrics(wae, clf, ds, dev, seed, per_style),
                 "transfer": transfer_metrics(wae, clf, z_te, lab_te, len(ds.styles), dev, seed),
                 "latent": {"style_accuracy_from_z": round(latent_style_accuracy(
                     z_tr_np, lab_tr["style"], z_te_np, lab_te["style"], len(ds.styles), seed), 4),
                     "correlation": latent_correlations(np.concatenate([z_tr_np, z_te_np]), {
                         k: np.concatenate([lab_tr[k], lab_te[k]]) for k in lab_te})}}
        report["variants"][name] = entry
        figure = out / f"reconstruction-{name}.png"
        _figure_reconstructions(figure, name, ds, mel_te.cpu().numpy(), recon.cpu().numpy(), picks, lab_te)
        figures.append(figure.name)
        latents[name] = (np.concatenate([z_tr_np, z_te_np]),
                         {k: np.concatenate([lab_tr[k], lab_te[k]]) for k in ATTRIBUTES})
    _figure_latents(out / "latent.png", ds, latents, seed)
    report["figures"] = figures + ["latent.png"]
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "ablation.md").write_text(ablation_markdown(report))
    return report


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def ablation_markdown(report: dict) -> str:
    """The report as Markdown tables: judges first, then the variants side by side."""
    j, ch = report["classifiers_test_accuracy"], report["chance"]
    lines = [f"# Ablation on `{Path(report['data']).name}` ({report['n_test']} test notes, "
             f"{len(report['styles'])} styles)", "",
             "## Judges: attribute classifiers on real test notes (accuracy %)", "",
             "| pitch class | octave | style |", "|---|---|---|",
             f"| {_pct(j['pitch_class'])} | {_pct(j['octave'])} | {_pct(j['style'])} |", "",
             "## Variants side by side", "",
             "Reconstruction on the test split (LMD: mean |log-mel difference|, SC: spectral convergence "
             "of the mel magnitudes); "
             "generation from prior z judged by the classifiers (accuracy %, octaves 3-4 / full range); "
             f"style read from z by a fresh classifier (accuracy %; chance {_pct(ch['style'])}, commonest style "
             f"{_pct(report['style_majority_share'])}, read from pitch and velocity alone "
             f"{_pct(report['style_from_note_only'])}).", "",
             "Transfer: each test note's own z decoded with another style; the judges' style accuracy "
             "on the target (and how often they still hear the source style).", "",
             "| variant | LMD | SC | gen pitch class | gen octave | gen style | style from z | transfer style "
             "(source) | epochs | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        g34, gfull = v["generation"]["octaves_3_4"], v["generation"]["full_range"]
        rec, tr = v["reconstruction"], v["training"]
        lines.append(
            f"| {name} | {rec['log_mel_distance']:.3f} | {rec['spectral_convergence']:.3f} | "
            + " | ".join(f"{_pct(g34[k])} / {_pct(gfull[k])}" for k in ATTRIBUTES)
            + f" | {_pct(v['latent']['style_accuracy_from_z'])} | {_pct(v['transfer']['style'])} "
              f"({_pct(v['transfer']['source_style'])}) | {tr.get('epochs_run', '?')} | "
              f"{tr.get('train_seconds', '?')} |")
    lines += ["", "## Correlation of each z dimension with the attributes",
              "", "Over the train and test notes: Pearson |r| for pitch, octave, velocity; correlation "
              "ratio eta for pitch class and style (with 12 classes eta is about sqrt(11/n) by chance).", "",
              "| variant | pitch | octave | velocity | pitch class | style |", "|---|---|---|---|---|---|"]
    for name, v in report["variants"].items():
        c = v["latent"]["correlation"]
        lines.append(f"| {name} | " + " | ".join(", ".join(f"{x:.2f}" for x in c[k])
                                                  for k in ("pitch", "octave", "velocity", "pitch_class", "style"))
                     + " |")
    lines += ["", "## Generated style accuracy per style (%, octaves 3-4)", "",
              "| variant | " + " | ".join(report["styles"]) + " |", "|---" * (len(report["styles"]) + 1) + "|"]
    for name, v in report["variants"].items():
        per = v["generation"]["octaves_3_4"]["style_per_style"]
        lines.append(f"| {name} | " + " | ".join(_pct(per[s]) for s in report["styles"]) + " |")
    lines += ["", "Figures: " + ", ".join(report.get("figures", [])), ""]
    return "\n".join(lines)

