/* The harmonic inverter at inference, in C, after its network: the per-frame controls from the
 * network's output (harmonic_controls), then the spectra of the windowed frames from them
 * (harmonic_spectra).
 *
 * harmonic_controls computes what HarmonicInverter.controls computes with torch after the network
 * (each harmonic's level read off the mel, the noise levels, the smoothed and centred deviations),
 * in float32, and holds the last frame's controls for one frame more, as forward() does: about
 * twenty small tensor operations in torch, each costing more in its overhead than in its work.
 * With P = pairs layered harmonics, the first P harmonics' second partials follow the K first ones
 * in amp and dev: the first partial's amplitude times cos(theta), the second's times sin(theta),
 * the second's deviation the first's plus its group's smoothed offset.
 * Shapes: raw [B, G + M + K (+ G + P), F] (the network's output rows: deviations, noise,
 * harmonics, then the second partials' offsets and shares); logmel [B, M, F]; f0 [B] (float64,
 * Hz); band_width [M]; group_of [K] (int64); amp, dev [B, F + 1, K + P] and noise [B, F + 1, M],
 * written whole. Returns 0, or -1 without memory for its scratch rows (nothing written then).
 *
 * It computes what HarmonicInverter.spectra computes with torch (waeserver/sound/harmonic.py,
 * the reference, which also gives the gradients for training), in the same order of operations
 * and in float32 where that does: the nominal phase at each frame's centre wrapped from float64,
 * the deviation integrated between centres (trapezoid), each harmonic's window transform read
 * from the table of rows and written at its fractional bin, bins below 0 and past n/2 folded back,
 * then the shaped noise. torch spends most of its time there on tensors of frames x harmonics x
 * taps; here a harmonic is a polynomial sine and cosine and `taps` complex additions, and a
 * harmonic whose amplitude is exactly 0 (above Nyquist) is skipped. The one difference: the phase
 * is reduced to a cycle before its sine is taken (torch takes the sine of the whole angle in
 * float32), a few 1e-5 of the waveform on a note with wide vibrato, none on a steady one.
 *
 * Shapes (all contiguous): f0 [B] (float64, Hz); numbers [K] (int64: partial k is harmonic
 * numbers[k]); amp, dev [B, F, K]; noise_bands [B, F, M];
 * noise_low [half] (int64), noise_frac [half]; noise_table [noise_frames, half, 2];
 * kernel_rows [oversample + 2, taps]; out [B, F, half, 2], written whole. half = n_fft / 2 + 1.
 * Returns 0, or -1 when the scratch row could not be allocated (nothing written then). */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int n_fft, hop, sample_rate, taps, oversample, n_mels, noise_frames;
} SynthSizes;

typedef struct {          /* HarmonicInverter's settings the controls need; the mel scale's from dsp/spectral.py */
    int n_mels, groups, sample_rate, analysis_fft;
    float mel_linear_hz, mel_break_hz, mel_break, mel_log_step;
    float mel_lo, mel_step, max_deviation, log_ceiling, noise_offset, max_layer_offset;
} ControlSizes;

/* Fractional mel-band index of a frequency (HarmonicInverter.mel_position: band j centred on edge j + 1). */
static inline float mel_position(const ControlSizes *c, float hz) {
    const float brk = c->mel_break_hz;
    float mel = hz < brk ? hz / c->mel_linear_hz : c->mel_break + logf((hz > brk ? hz : brk) / brk) / c->mel_log_step;
    float pos = (mel - c->mel_lo) / c->mel_step - 1.0f;
    return pos < 0.0f ? 0.0f : pos > (float)(c->n_mels - 1) ? (float)(c->n_mels - 1) : pos;
}

/* bound * tanh(x) [frames], averaged over 5 frames (the ends repeated), into y; `bounded` is scratch
 * [frames + 4]. Returns the sum of y. */
static double smooth_bounded(const float *x, int frames, float bound, float *bounded, float *y) {
    static const float smooth[5] = {1.0f / 9, 2.0f / 9, 3.0f / 9, 2.0f / 9, 1.0f / 9};
    double total = 0.0;
    for (int f = 0; f < frames + 4; f++) {
        int at = f < 2 ? 0 : f - 2 >= frames ? frames - 1 : f - 2;
        bounded[f] = bound * tanhf(x[at]);
    }
    for (int f = 0; f < frames; f++) {
        float sum = 0.0f;
        for (int t = 0; t < 5; t++) sum += smooth[t] * bounded[f + t];
        y[f] = sum;
        total += sum;
    }
    return total;
}

int harmonic_controls(const ControlSizes *c, int batch, int frames, int count, int pairs, const float *raw,
                      const float *logmel, const double *f0, const float *band_width, const int64_t *group_of,
                      float *amp, float *noise, float *dev) {
    const int m = c->n_mels, g = c->groups, rows = g + m + count + (pairs ? g + pairs : 0), out_frames = frames + 1;
    const int partials = count + pairs;         /* per frame of amp and dev */
    float *bounded = malloc(sizeof(float) * ((size_t)frames + 4 + 2 * (size_t)g * frames));
    if (!bounded) return -1;
    float *groups = bounded + frames + 4, *offsets = groups + (size_t)g * frames;
    for (int b = 0; b < batch; b++) {
        const float *r = raw + (size_t)b * rows * frames, *mel = logmel + (size_t)b * m * frames;
        float *a = amp + (size_t)b * out_frames * partials, *n = noise + (size_t)b * out_frames * m;
        float *d = dev + (size_t)b * out_frames * partials;
        const float hz0 = (float)f0[b];
        for (int k = 0; k < count; k++) {         /* each harmonic's level, read off the mel between two bands */
            float hz = hz0 * (float)(k + 1);
            float pos = mel_position(c, hz);
            int low = (int)pos;
            if (low > m - 2) low = m - 2;
            float frac = pos - (float)low;
            float width = band_width[low] + frac * (band_width[low + 1] - band_width[low]);
            float spacing = 2.0f * hz0;
            float collect = hz * (1.0f + c->max_deviation) < 0.5f * (float)c->sample_rate
                ? logf((width < spacing ? width : spacing) / (float)c->analysis_fft) : -1e4f;
            const float *lo = mel + (size_t)low * frames, *hi = lo + frames, *corr = r + (size_t)(g + m + k) * frames;
            for (int f = 0; f < frames; f++) {
                float level = (1.0f - frac) * lo[f] + frac * hi[f] + collect + corr[f];
                a[(size_t)f * partials + k] = expf(level < c->log_ceiling ? level : c->log_ceiling);
            }
        }
        for (int j = 0; j < m; j++) {             /* noise: the mel's level per band, corrected */
            const float *level = mel + (size_t)j * frames, *corr = r + (size_t)(g + j) * frames;
            for (int f = 0; f < frames; f++) {
                float x = level[f] + c->noise_offset + corr[f];
                n[(size_t)f * m + j] = expf(x < c->log_ceiling ? x : c->log_ceiling);
            }
        }
        /* deviations: bounded, averaged over 5 frames (the ends repeated), the fundamental's mean removed */
        double mean0 = 0.0;
        for (int q = 0; q < g; q++) {
            double total = smooth_bounded(r + (size_t)q * frames, frames, c->max_deviation, bounded,
                                          groups + (size_t)q * frames);
            if (q == 0) mean0 = total;
        }
        float centre = (float)(mean0 / frames);
        for (int f = 0; f < frames; f++)
            for (int k = 0; k < count; k++)
                d[(size_t)f * partials + k] = groups[(size_t)group_of[k] * frames + f] - centre;
        /* the second partials: the first's amplitude shared by cos and sin of theta, an offset per group */
        const float *layer = r + (size_t)(g + m + count) * frames;
        for (int q = 0; q < (pairs ? g : 0); q++)
            smooth_bounded(layer + (size_t)q * frames, frames, c->max_layer_offset, bounded, offsets + (size_t)q * frames);
        for (int k = 0; k < pairs; k++) {
            const float *share = layer + (size_t)(g + k) * frames, *offset = offsets + (size_t)group_of[k] * frames;
            const int audible = hz0 * (float)(k + 1) * (1.0f + c->max_deviation + c->max_layer_offset)
                < 0.5f * (float)c->sample_rate;
            for (int f = 0; f < frames; f++) {
                float theta = 1.5707963267948966f * tanhf(share[f]), *first = a + (size_t)f * partials;
                float level = first[k];
                first[k] = level * cosf(theta);
                first[count + k] = audible ? level * sinf(theta) : 0.0f;
                d[(size_t)f * partials + count + k] = d[(size_t)f * partials + k] + offset[f];
            }
        }
        /* the controls of the last frame hold for the one after it */
        memcpy(a + (size_t)frames * partials, a + (size_t)(frames - 1) * partials, sizeof(float) * partials);
        memcpy(n + (size_t)frames * m, n + (size_t)(frames - 1) * m, sizeof(float) * m);
        memcpy(d + (size_t)frames * partials, d + (size_t)(frames - 1) * partials, sizeof(float) * partials);
    }
    free(bounded);
    return 0;
}

typedef struct {          /* one harmonic of the note being synthesized */
    double drift;         /* the deviation summed between frame centres (float64, as torch's cumsum) */
    float per_hop;        /* cycles per hop */
    float wrapped;        /* its fractional part, from float64 */
    float bins;           /* its frequency in bins */
} Harmonic;

/* cos and sin of 2 pi x: x reduced to within 1/8 cycle of a quarter, then Taylor polynomials
 * (error below 1e-7 there), then the quarter's rotation. Exact in the reduction, so the phase
 * of a harmonic many cycles into a note is not rounded as cosf(2 pi x) would round it. */
static inline void cos_sin_cycles(float x, float *c, float *s) {
    x -= (float)(int)x;                           /* (-1, 1) */
    float q = x * 4.0f;
    int quarter = (int)(q + (q >= 0 ? 0.5f : -0.5f));
    float y = (x - 0.25f * (float)quarter) * 6.283185307179586f;   /* [-pi/4, pi/4] */
    float y2 = y * y;
    float sn = y * (1.0f + y2 * (-1.0f / 6 + y2 * (1.0f / 120 + y2 * (-1.0f / 5040 + y2 * (1.0f / 362880)))));
    float cs = 1.0f + y2 * (-0.5f + y2 * (1.0f / 24 + y2 * (-1.0f / 720 + y2 * (1.0f / 40320))));
    switch (quarter & 3) {
    case 0: *c = cs; *s = sn; break;
    case 1: *c = -sn; *s = cs; break;
    case 2: *c = -cs; *s = -sn; break;
    default: *c = sn; *s = -cs; break;
    }
}

static void harmonics_of_frame(const SynthSizes *s, Harmonic *h, int count, int frame, const float *amp,
                               const float *dev, const float *dev_prev, const float *rows, float *ext) {
    const int w = s->taps, half = s->n_fft / 2 + 1, R = s->oversample;
    for (int k = 0; k < count; k++) {
        if (frame > 0) h[k].drift += 0.5f * (dev[k] + dev_prev[k]);
        if (amp[k] == 0.0f) continue;             /* above Nyquist */
        float nominal = h[k].wrapped * (float)frame;
        nominal -= (float)(int)nominal;
        float centre = h[k].bins * (1.0f + dev[k]);
        int low = (int)centre;                    /* centre > 0: truncation is floor */
        float position = (1.0f + (float)low - centre) * (float)R;
        int row = (int)position;
        float t = position - (float)row;
        float cycles = nominal + (float)h[k].drift * h[k].per_hop + 0.5f * (float)((low + w / 2 - 1) & 1) - 0.25f;
        float c, sn;
        cos_sin_cycles(cycles, &c, &sn);
        float re = amp[k] * c, im = amp[k] * sn;
        int start = low - (w / 2 - 1) + w;
        if (start > half + w - 1) start = half + w - 1;
        const float *a = rows + (size_t)row * w, *b = a + w;
        float *e = ext + 2 * start;
        for (int j = 0; j < w; j++) {
            float tap = a[j] + t * (b[j] - a[j]);
            e[2 * j] += re * tap;
            e[2 * j + 1] += im * tap;
        }
    }
}

int harmonic_spectra(const SynthSizes *s, int batch, int frames, int count, const double *f0,
                     const int64_t *numbers, const float *amp,
                     const float *dev, const float *noise_bands, const int64_t *noise_low, const float *noise_frac,
                     const float *noise_table, const float *kernel_rows, float *out) {
    const int w = s->taps, half = s->n_fft / 2 + 1, m = s->n_mels;
    const int width = half + 2 * w;
    float *ext = malloc(sizeof(float) * 2 * (size_t)width);
    Harmonic *h = malloc(sizeof(Harmonic) * (size_t)count);
    if (!ext || !h) {
        free(ext);
        free(h);
        return -1;
    }
    for (int b = 0; b < batch; b++) {
        const float bins_per_hz = (float)f0[b] * (float)((double)s->n_fft / s->sample_rate);
        for (int k = 0; k < count; k++) {
            double per_hop = f0[b] * (double)numbers[k] * s->hop / s->sample_rate;
            h[k] = (Harmonic){0.0, (float)per_hop, (float)(per_hop - floor(per_hop)), bins_per_hz * (float)numbers[k]};
        }
        for (int f = 0; f < frames; f++) {
            size_t at = ((size_t)b * frames + f) * count;
            memset(ext, 0, sizeof(float) * 2 * width);
            harmonics_of_frame(s, h, count, f, amp + at, dev + at, f > 0 ? dev + at - count : dev + at,
                               kernel_rows, ext);
            float *spec = out + ((size_t)b * frames + f) * half * 2;
            for (int i = 0; i < half; i++) {
                spec[2 * i] = 0.5f * ext[2 * (w + i)];
                spec[2 * i + 1] = 0.5f * ext[2 * (w + i) + 1];
            }
            /* a real frame: each bin plus the mirror of its negative frequency */
            for (int i = 0; i <= w; i++) {
                spec[2 * i] += 0.5f * ext[2 * (w - i)];
                spec[2 * i + 1] -= 0.5f * ext[2 * (w - i) + 1];
                int hi = half - 1 - w + i, from = half + 2 * w - 1 - i;
                spec[2 * hi] += 0.5f * ext[2 * from];
                spec[2 * hi + 1] -= 0.5f * ext[2 * from + 1];
            }
            const float *bands = noise_bands + ((size_t)b * frames + f) * m;
            const float *table = noise_table + (size_t)(f % s->noise_frames) * half * 2;
            for (int i = 0; i < half; i++) {
                float lo = bands[noise_low[i]], hi = bands[noise_low[i] + 1];
                float shaped = lo + noise_frac[i] * (hi - lo);
                spec[2 * i] += shaped * table[2 * i];
                spec[2 * i + 1] += shaped * table[2 * i + 1];
            }
        }
    }
    free(ext);
    free(h);
    return 0;
}
