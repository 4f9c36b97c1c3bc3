/* The voice pool in C: the whole real-time path of waeserver, with no interpreter in it.
 *
 * JACK calls jack_process on its process thread; it reads the period's MIDI, mixes the sounding
 * voices from renders already published, and writes both outputs (and, while a take for live
 * sampling is armed, copies in_1 into it: voices_capture). Python never runs on that
 * thread, so no Python thread (renderer, OSC, control, garbage collector) can delay it by holding
 * the interpreter lock. The offline renderer and the tests call voices_process with the same
 * events instead.
 *
 * Everything else talks to the pool through three single-producer single-consumer rings (Python
 * serialises its own threads on each side with a lock of its own, which this side never sees):
 *   commands (Python -> audio): note and pedal actions, raw MIDI from other inputs, published
 *     renders, applied at the start of the next period, or held for their frame (a time-tagged
 *     bundle's: notes, master gain, release, bend range, and the frame of a timbre change, from
 *     which notes take the renders made for it: C_TIMBRE);
 *   events (audio -> Python): note started / ended, sync tokens, renders no longer used, MIDI
 *     control messages (mapped CCs, program changes) for the control thread;
 *   requests (audio -> renderer): pitches to render now, per-note draws used up.
 * A render is a float array owned by Python; its slot holds a pointer, a length and a loop start,
 * and a reference count (the pitch table and each voice using it). When the count drops to zero
 * the slot is handed back through the events ring, and only then may Python free the array. A
 * render handed over in two parts (a priority render's head, then the rest written after it in the
 * same array) grows in place: C_EXTEND gives its slot the whole length and loop. Each
 * pitch has one render per velocity layer; a voice blends the two layers around its velocity
 * (their timbre: its level is the velocity curve's gain).
 *
 * The voice logic follows waeserver/voices.py's documentation: a free voice, else the oldest
 * released, else the oldest of the same pitch, else the oldest; stolen voices fade over 5 ms in a
 * tail slot; stale notes wait for a priority render within the latency budget or play the last
 * render of their pitch as a stand-in, crossfaded to the new render when it arrives.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define N_PITCHES 128
#define MAX_LAYERS 8       /* velocity layers of one pitch */
#define MAX_SLOTS 4096
#define CMD_RING 8192      /* powers of two */
#define EVENT_RING 16384
#define REQUEST_RING 1024
#define LATENCY_SLOTS 256
#define TIMED_PERIODS 4096
#define MAX_MIDI 1024      /* MIDI events of one period handed to the pool; more are dropped */
#define MAX_TIMED 4096     /* commands held for a later frame (time-tagged OSC bundles) */
#define JACK_THREAD_NICE -10  /* JACK's process thread when JACK is not realtime, where allowed */
#define JACK_THREAD_SLICE_NS 500000  /* and its slice: see jack_thread_init */
#define FADE_S 0.005       /* steal and panic fade */
#define XFADE_S 0.010      /* stand-in to fresh render crossfade */
#define GAIN_RAMP_S 0.001  /* a master gain change ramps over this long from its frame: no zipper noise */
/* The master limiter (see limit): below LIMIT_KNEE the mix passes untouched; above, its peak level
 * is bent smoothly towards LIMIT_CEILING, which it never reaches. */
#define LIMIT_KNEE 0.8
#define LIMIT_CEILING 0.98
#define LIMIT_HOLD_S 0.05   /* longer than the period of the lowest note: no ripple at its pitch */
#define LIMIT_RELEASE_S 0.3

enum { FREE, PENDING, PLAYING, RELEASED, FADING };
enum { C_NOTE_ON = 1, C_NOTE_OFF, C_SUSTAIN, C_BEND, C_PANIC, C_ALL_OFF, C_SYNC, C_PUBLISH, C_CLEAR, C_MIDI, C_LAYERS,
       C_RECORD, C_GAIN, C_RELEASE, C_BEND_RANGE, C_TIMBRE, C_EXTEND };
enum { GAIN, RELEASE, BEND_RANGE };   /* the controls of Params.control */
enum { E_GO = 1, E_END, E_SYNCED, E_FREED, E_CONTROL };
enum { R_RENDER = 1, R_TAKEN };

/* when: the pool frame to apply it at (a time-tagged bundle's), -1 at the start of the next period */
typedef struct { int32_t kind, at, a, b, c, d; int64_t x, y; double f; int64_t when; } Command;
typedef struct { Command c; int64_t seq; } Timed;
typedef struct { int32_t kind, a, b, c; } Event;
typedef struct { int32_t kind, pitch, layers, pad; } Request;   /* layers: a bit per velocity layer */

/* Written by Python at any time, read by the audio thread once per use. control: master gain,
 * release, bend range as set untimed (plain OSC, MIDI CCs; timed ones are commands): the audio
 * thread takes one at the start of the period after its count in changes has moved. generation:
 * that of the cache's latest control target (see C_TIMBRE), written before its fresh bits. */
typedef struct {
    double control[3], budget_ms, expected_ms;
    int32_t per_note, channel, low, high, wake_fd, generation;
    uint32_t changes[3], pad;
    float velocity[128];
    float layer_velocity[MAX_LAYERS];    /* read by C_LAYERS, not live */
} Params;

typedef struct {
    int64_t hits, misses, standins, out_of_range, dropped, overflow, mixes, frame, calls, n_latency, notes;
    int64_t limited;                     /* frames the limiter turned down */
    int64_t timed_late, timed_overflow;  /* held commands applied after their frame; not held (full) */
    int64_t latency[LATENCY_SLOTS];      /* frames from note-on to sound */
    int64_t took_ns[TIMED_PERIODS];      /* JACK callback durations */
} Stats;

/* The renders of the two velocity layers a voice blends: layer ``layer`` and the one above (b: -1
 * when the voice's velocity sits on a layer or beyond the outer ones). */
typedef struct { int32_t a, b; } Pair;

typedef struct {
    int32_t state, pitch, held, sustained, waiting, layer, xfade, done;
    int32_t need;                            /* a bit per velocity layer it blends */
    int32_t gen;                             /* the render generation it plays (see C_TIMBRE) */
    Pair slot, old, standin;
    double pos, level, slope, gain, blend;   /* pos: frames into the note, unwrapped; blend: b's weight */
    int64_t age, released_at, on_frame, wait, hold;
} Voice;

typedef struct { const float *wave; int64_t length, loop; int32_t refs, gen; } Slot;   /* gen: see C_TIMBRE */

typedef struct {
    uint32_t head, tail;     /* head: producer's, tail: consumer's; both only grow */
} Ring;

typedef void *(*port_buffer_fn)(void *, uint32_t);
typedef uint32_t (*midi_count_fn)(void *);
typedef struct { uint32_t time; size_t size; uint8_t *buffer; } JackMidiEvent;
typedef int (*midi_get_fn)(JackMidiEvent *, void *, uint32_t);
typedef int (*set_process_fn)(void *, int (*)(uint32_t, void *), void *);
typedef int (*set_thread_init_fn)(void *, void (*)(void *), void *);
typedef int (*cycle_times_fn)(const void *, uint32_t *, uint64_t *, uint64_t *, float *);
typedef uint64_t (*jack_time_fn)(void);

typedef struct {
    Params params;
    Stats stats;
    uint8_t fresh[N_PITCHES];            /* a bit per fresh layer: written by Python (the cache), cleared here
                                            by per-note takes */
    uint8_t arriving[N_PITCHES];         /* layers published so far in a pitch's batch (see publish) */
    int64_t played[N_PITCHES];           /* note counter per pitch: refill the most recently played first */
    int32_t current[N_PITCHES][MAX_LAYERS];  /* slot of each pitch's latest render per layer, -1 none */
    int32_t n_layers;
    float layer_velocity[MAX_LAYERS];    /* MIDI velocity of each layer, ascending */
    int32_t rate, polyphony, n_voices, max_period, fade, xfade_len, sustain_on, n;
    double ratio;
    double control[3];                   /* gain, release, bend range in force (Params.control, C_GAIN, ...) */
    uint32_t seen[3];                    /* Params.changes taken */
    double gain_now, gain_step;          /* the master gain, and its ramp per frame for gain_left frames */
    int32_t gain_left, gain_done;        /* gain_done: frames of this period the master gain has scaled */
    int32_t gen_now;                     /* the render generation notes take from now (C_TIMBRE) */
    int32_t earlier[N_PITCHES][MAX_LAYERS];  /* while a timbre change is pending: the newest render of a
                                                generation before current's, for the notes before it */
    double limit_env, limit_release;     /* the limiter's peak level and its decay per frame */
    int32_t limit_hold, limit_hold_len;  /* frames left before it decays, and after a new peak */
    int64_t age;
    Voice *voices;
    Slot slots[MAX_SLOTS];
    Ring cmd_ring, event_ring, request_ring;
    Command commands[CMD_RING];
    Timed timed[MAX_TIMED];              /* a binary heap by (when, arrival) */
    int32_t n_timed, n_due;
    int64_t timed_seq;
    Command due[MAX_TIMED];              /* this period's, in order, at their offsets */
    /* The take (live sampling, see voices_capture): in_1 copied into a buffer Python allocated and
     * keeps alive, armed by C_RECORD. take_got is the audio thread's (Python reads it); take_id says
     * whose take it counts, stored after take_got is reset. */
    float *take;
    int64_t take_want, take_got, take_from, take_start_ns, take_done_ns;
    int32_t take_id, take_pad;
    /* The clock of the current period, for Python to map times to frames (voices_anchor): its first
     * frame, when JACK's DLL puts that frame (CLOCK_MONOTONIC ns), the DLL's period; a seqlock. */
    uint32_t anchor_seq;
    int64_t anchor_frame, anchor_ns;
    double anchor_period_ns;
    int32_t anchor_frames;
    Event events[EVENT_RING];
    Request requests[REQUEST_RING];
    float *buf, *src, *old, *tmp;
    /* JACK */
    void *out_1, *out_2, *midi_in, *in_1;
    port_buffer_fn port_buffer;
    midi_count_fn midi_count;
    midi_get_fn midi_get;
    cycle_times_fn cycle_times;
    jack_time_fn jack_time;
    void *client;
    int32_t thread_nice;     /* JACK's threads: 0 not started, 2 at JACK_THREAD_NICE, 3 not raised,
                                4 at JACK_THREAD_NICE with a short slice */
    int32_t thread_known;    /* the process thread has called us: thread is it */
    pthread_t thread;
    Command midi[MAX_MIDI];
} Pool;

/* --- rings ------------------------------------------------------------------------------------ */
static int ring_space(Ring *r, uint32_t size) {
    return (uint32_t)(r->head - __atomic_load_n(&r->tail, __ATOMIC_ACQUIRE)) < size;
}
static void ring_published(Ring *r) { __atomic_store_n(&r->head, r->head + 1, __ATOMIC_RELEASE); }
static int ring_ready(Ring *r) { return __atomic_load_n(&r->head, __ATOMIC_ACQUIRE) != r->tail; }
static void ring_consumed(Ring *r) { __atomic_store_n(&r->tail, r->tail + 1, __ATOMIC_RELEASE); }

static void emit(Pool *p, int32_t kind, int32_t a, int32_t b, int32_t c) {
    if (!ring_space(&p->event_ring, EVENT_RING)) { p->stats.overflow++; return; }
    Event *e = &p->events[p->event_ring.head & (EVENT_RING - 1)];
    e->kind = kind; e->a = a; e->b = b; e->c = c;
    ring_published(&p->event_ring);
}

static void ask(Pool *p, int32_t kind, int32_t pitch, int32_t layers) {
    if (ring_space(&p->request_ring, REQUEST_RING)) {
        Request *r = &p->requests[p->request_ring.head & (REQUEST_RING - 1)];
        r->kind = kind; r->pitch = pitch; r->layers = layers;
        ring_published(&p->request_ring);
    } else {
        p->stats.overflow++;
    }
    if (p->params.wake_fd >= 0) {   /* a non-blocking pipe: a full one means the renderer is awake */
        char w = 'w';
        ssize_t ignored = write(p->params.wake_fd, &w, 1);
        (void)ignored;
    }
}

/* --- slots -------------------------------------------------------------------------------------- */
static void ref(Pool *p, int32_t s) { if (s >= 0) p->slots[s].refs++; }
static void unref(Pool *p, int32_t s) {
    if (s >= 0 && --p->slots[s].refs == 0) emit(p, E_FREED, s, 0, 0);
}
static const Pair NONE = {-1, -1};
static void unref_pair(Pool *p, Pair *s) { unref(p, s->a); unref(p, s->b); *s = NONE; }

/* --- voices ------------------------------------------------------------------------------------- */
static void voice_begin(Voice *v, int32_t pitch, double gain, int64_t age, int64_t on_frame, int64_t hold) {
    v->pitch = pitch; v->gain = gain; v->age = age; v->on_frame = on_frame; v->hold = hold;
    v->pos = 0.0; v->level = 1.0; v->slope = 0.0;
    v->held = 1; v->sustained = 0; v->waiting = 0;
    v->released_at = 0; v->wait = 0; v->xfade = 0;
    v->layer = 0; v->blend = 0.0;
    v->slot = v->old = v->standin = NONE;
}

static void end_voice(Pool *p, Voice *v) {
    if (v->state == PLAYING || v->state == RELEASED || v->state == FADING) emit(p, E_END, v->pitch, 0, 0);
    v->state = FREE;
    unref_pair(p, &v->slot); unref_pair(p, &v->old); unref_pair(p, &v->standin);
}

static void release_voice(Pool *p, Voice *v) {
    if (v->state == PENDING) return;   /* released as soon as it starts (see play) */
    v->state = RELEASED;
    v->released_at = ++p->age;
    double frames = p->control[RELEASE] * p->rate;
    v->slope = -v->level / (frames > p->fade ? frames : p->fade);
}

static void fade_out(Pool *p, Voice *v) {
    if (v->state == PENDING) { end_voice(p, v); return; }
    v->state = FADING;
    v->held = v->sustained = 0;
    v->slope = -v->level / p->fade;
}

static void record_latency(Pool *p, int64_t frames) {
    p->stats.latency[p->stats.n_latency % LATENCY_SLOTS] = frames > 0 ? frames : 0;
    p->stats.n_latency++;
}

/* Start v on the renders s (the voice's references move in from the caller). */
static void play(Pool *p, Voice *v, Pair s, int at) {
    v->slot = s;
    v->state = PLAYING;
    record_latency(p, p->stats.frame + at - v->on_frame);
    emit(p, E_GO, v->pitch, 0, 0);
    if (!v->held && !v->sustained) release_voice(p, v);   /* let go while it waited: still heard */
}

static void play_standin(Pool *p, Voice *v, int at) {
    p->stats.standins++;
    v->waiting = 1;
    Pair s = v->standin;
    v->standin = NONE;
    play(p, v, s, at);
}

/* Read n frames of slot s from pos at the bend ratio into out; frames read. */
static int read_slot(Pool *p, int32_t s, double pos, int n, float *out) {
    const float *audio = p->slots[s].wave;
    int64_t length = p->slots[s].length;
    double ratio = p->ratio;
    if (ratio == 1.0 && pos == floor(pos)) {
        int64_t i = (int64_t)pos, k = length - i;
        if (k > n) k = n;
        if (k <= 0) return 0;
        memcpy(out, audio + i, (size_t)k * sizeof(float));
        return (int)k;
    }
    double room = ceil(((double)(length - 1) - pos) / ratio);
    int k = room < 0 ? 0 : (room < n ? (int)room : n);
    for (int j = 0; j < k; j++) {
        double x = pos + j * ratio;
        int64_t i0 = (int64_t)x, i1 = i0 + 1 < length ? i0 + 1 : length - 1;
        float a = audio[i0], d = audio[i1] - a;
        out[j] = a + (float)((double)d * (x - (double)i0));
    }
    return k;
}

/* n frames of slot s from pos, frames into the note, into out: a looping render goes back to its
 * loop start whenever it reaches its end; frames past the end of one that does not are zeros. How
 * many frames the render filled. */
static int read_at(Pool *p, int32_t s, double pos, int n, float *out) {
    const Slot *slot = &p->slots[s];
    double ratio = p->ratio, span = (double)(slot->length - slot->loop), last = (double)(slot->length - 1);
    if (slot->loop >= 0 && pos > last) pos -= span * ceil((pos - last) / span);
    if (pos < 0.0) pos = 0.0;   /* rounding just above: never before the first frame */
    int k = read_slot(p, s, pos, n, out);
    if (slot->loop >= 0) {
        pos += k * ratio;
        while (k < n) {
            pos -= span;
            int got = read_slot(p, s, pos, n - k, out + k);
            if (got == 0) break;
            pos += got * ratio;
            k += got;
        }
    }
    if (k < n) memset(out + k, 0, (size_t)(n - k) * sizeof(float));
    return k;
}

/* n frames of a voice's two layers s at pos, b weighted by blend, into out; frames either filled. */
static int read_pair(Pool *p, Pair s, double blend, double pos, int n, float *out) {
    int k = read_at(p, s.a, pos, n, out);
    if (s.b < 0 || blend <= 0.0) return k;
    float *b = p->tmp;
    int kb = read_at(p, s.b, pos, n, b);
    float wa = (float)(1.0 - blend), wb = (float)blend;
    for (int j = 0; j < n; j++) out[j] = out[j] * wa + b[j] * wb;
    return kb > k ? kb : k;
}

static void mix_voice(Pool *p, Voice *v, int start, int end) {
    int n = end - start;
    p->stats.mixes++;
    if (v->hold > 0) {
        v->hold -= n;
        if (v->hold <= 0 && v->held) {
            v->held = 0;
            if (p->sustain_on) v->sustained = 1; else release_voice(p, v);
        }
    }
    float *src = p->src;
    int k = read_pair(p, v->slot, v->blend, v->pos, n, src);
    if (v->xfade > 0 && v->old.a >= 0) {   /* from a stand-in to the fresh render */
        int kx = k < v->xfade ? k : v->xfade;
        float *old = p->old;
        read_pair(p, v->old, v->blend, v->pos, kx, old);
        for (int j = 0; j < kx; j++) {
            double w = (double)v->xfade / p->xfade_len - (double)(j + 1) / p->xfade_len;
            src[j] += (float)((double)(old[j] - src[j]) * w);
        }
        v->xfade -= kx;
        if (v->xfade <= 0) unref_pair(p, &v->old);
    }
    float *out = p->buf + start;
    if (v->slope != 0.0) {
        for (int j = 0; j < k; j++) {
            double env = v->level + (j + 1) * v->slope;
            env = env < 0.0 ? 0.0 : (env > 1.0 ? 1.0 : env);
            out[j] += (float)((double)src[j] * (env * v->gain));
        }
        double level = v->level + v->slope * k;
        v->level = level < 0.0 ? 0.0 : (level > 1.0 ? 1.0 : level);
        if (v->level <= 0.0) { end_voice(p, v); return; }
    } else {
        float g = (float)(v->gain * v->level);
        for (int j = 0; j < k; j++) out[j] += src[j] * g;
    }
    v->pos += k * p->ratio;
    if (k < n) end_voice(p, v);
}

/* Mix v from where it stands in this period up to frame end. */
static void upto(Pool *p, Voice *v, int end) {
    int start = v->done;
    if (end <= start) return;
    v->done = end;
    if (v->state == FREE || v->state == PENDING) return;   /* pending: silent until it plays */
    mix_voice(p, v, start, end);
}

/* --- master gain --------------------------------------------------------------------------------- */
/* The mix of frames gain_done..end, every voice mixed that far first, scaled by the master gain. */
static void gain_upto(Pool *p, int end) {
    int start = p->gain_done;
    if (end <= start) return;
    for (int i = 0; i < p->n_voices; i++) upto(p, &p->voices[i], end);
    p->gain_done = end;
    float *buf = p->buf;
    int j = start;
    for (; j < end && p->gain_left > 0; j++, p->gain_left--) {
        p->gain_now += p->gain_step;
        buf[j] = (float)((double)buf[j] * p->gain_now);
    }
    if (p->gain_left == 0) p->gain_now = p->control[GAIN];   /* the ramp's end exactly, not its rounding */
    if (j < end && p->gain_now != 1.0) {
        float g = (float)p->gain_now;
        for (; j < end; j++) buf[j] *= g;
    }
}

/* Control c (GAIN, RELEASE, BEND_RANGE) set to value from frame at of this period: the master gain
 * ramps to it over GAIN_RAMP_S from there; a release applies to voices released from there on (the
 * voices mixed up to it first: one whose hold ends before it is released with the old length), a
 * bend range to bends from there on. */
static void set_control(Pool *p, int c, double value, int at) {
    if (c == GAIN) {
        gain_upto(p, at);
        int ramp = (int)(GAIN_RAMP_S * p->rate) > 1 ? (int)(GAIN_RAMP_S * p->rate) : 1;
        p->gain_step = (value - p->gain_now) / ramp;
        p->gain_left = value != p->gain_now ? ramp : 0;
    } else if (c == RELEASE) {
        for (int i = 0; i < p->n_voices; i++) upto(p, &p->voices[i], at);
    }
    p->control[c] = value;
}

/* --- the render table -------------------------------------------------------------------------- */
/* Layer and blend for a velocity: between the two nearest layers, linearly; the outer ones beyond.
 * The layers it needs fresh: those it blends; in per-note z mode every layer (one draw is one
 * latent point for all of them). */
static void pick_layers(Pool *p, double velocity, Voice *v) {
    const float *lv = p->layer_velocity;
    int n = p->n_layers;
    v->layer = velocity <= lv[0] ? 0 : n - 1;
    v->blend = 0.0;
    for (int i = 0; velocity > lv[0] && i + 1 < n; i++) {
        if (velocity < lv[i + 1]) {
            v->layer = i;
            v->blend = (velocity - lv[i]) / (lv[i + 1] - lv[i]);
            break;
        }
    }
    v->need = p->params.per_note ? (1 << n) - 1 : (1 << v->layer) | (v->blend > 0.0 ? 1 << (v->layer + 1) : 0);
}

/* The render of a pitch's layer for a note of generation gen: the latest, unless it was made for a
 * timbre change after the note (then the earlier one kept for such notes, if any); -1 none. */
static int32_t render_for(Pool *p, int32_t pitch, int layer, int32_t gen) {
    int32_t s = p->current[pitch][layer], before = p->earlier[pitch][layer];
    return s >= 0 && p->slots[s].gen > gen && before >= 0 ? before : s;
}

/* The render of a pitch's layer for a note of generation gen, else of its nearest layer that has
 * one; -1 none. */
static int32_t layer_slot(Pool *p, int32_t pitch, int layer, int32_t gen) {
    for (int d = 0; d < p->n_layers; d++) {
        int32_t s;
        if (layer - d >= 0 && (s = render_for(p, pitch, layer - d, gen)) >= 0) return s;
        if (layer + d < p->n_layers && (s = render_for(p, pitch, layer + d, gen)) >= 0) return s;
    }
    return -1;
}

/* The renders for a note-on of v (references for the caller), and whether they are fresh. */
static Pair take(Pool *p, Voice *v, int *fresh) {
    int32_t pitch = v->pitch;
    p->played[pitch] = ++p->stats.notes;
    Pair s = {layer_slot(p, pitch, v->layer, v->gen),
              v->blend > 0.0 ? layer_slot(p, pitch, v->layer + 1, v->gen) : -1};
    /* Before a timbre change still to come the cache's fresh bits are the change's: a note before it
     * plays what was rendered before it, as fresh (nothing renders its target any more). */
    int before = v->gen < __atomic_load_n(&p->params.generation, __ATOMIC_ACQUIRE);
    *fresh = s.a >= 0 && (before || (__atomic_load_n(&p->fresh[pitch], __ATOMIC_RELAXED) & v->need) == v->need);
    if (*fresh && !before && p->params.per_note) {   /* this draw is used up: the next note gets another */
        __atomic_store_n(&p->fresh[pitch], 0, __ATOMIC_RELAXED);
        ask(p, R_TAKEN, pitch, v->need);
    }
    ref(p, s.a);
    ref(p, s.b);
    return s;
}

/* New renders of pitch's layers (the bits of layers) of generation gen: voices waiting for them take
 * theirs once every layer they blend is new or fresh, so that a voice never blends a new layer with
 * an older one; a voice of an earlier generation keeps its timbre (it started before gen's change),
 * unless it has nothing else to play. */
static void arrived(Pool *p, int32_t pitch, int32_t layers, int32_t gen) {
    int32_t ready = layers | __atomic_load_n(&p->fresh[pitch], __ATOMIC_RELAXED);
    for (int i = 0; i < p->n_voices; i++) {
        Voice *v = &p->voices[i];
        if (v->pitch != pitch || v->state == FREE || (v->state != PENDING && !v->waiting)) continue;
        if (v->gen < gen && (v->state != PENDING || v->standin.a >= 0)) continue;
        if ((ready & v->need) != v->need) continue;   /* another batch brings the rest */
        int fresh;
        Pair s = take(p, v, &fresh);
        if (s.a < 0) { unref_pair(p, &s); continue; }   /* a layer this pool does not have */
        if (v->state == PENDING) {
            unref_pair(p, &v->standin);
            play(p, v, s, 0);
        } else {
            unref_pair(p, &v->old);
            v->old = v->slot;
            v->xfade = p->xfade_len;
            v->slot = s;
        }
        v->waiting = 0;
        if (p->params.per_note) return;   /* this draw is this note's now (take used it up) */
    }
}

/* --- actions ------------------------------------------------------------------------------------ */
static Voice *allocate(Pool *p, int32_t pitch, int at) {
    Voice *free_voice = NULL;
    int active = 0;
    for (int i = 0; i < p->n_voices; i++) {
        Voice *v = &p->voices[i];
        if (v->state == FREE) { if (!free_voice) free_voice = v; }
        else if (v->state != FADING) active++;
    }
    if (active >= p->polyphony) {
        Voice *victim = NULL;
        int64_t best = 0;
        for (int pass = 0; pass < 3 && !victim; pass++) {   /* released, then same pitch, then any */
            for (int i = 0; i < p->n_voices; i++) {
                Voice *v = &p->voices[i];
                int sounding = v->state == PENDING || v->state == PLAYING;
                int ok = pass == 0 ? v->state == RELEASED : (pass == 1 ? sounding && v->pitch == pitch : sounding);
                if (!ok) continue;
                int64_t key = v->state == RELEASED ? v->released_at : v->age;
                if (!victim || key < best) { victim = v; best = key; }
            }
        }
        if (victim) {
            upto(p, victim, at);
            fade_out(p, victim);
            if (!free_voice && victim->state == FREE) free_voice = victim;   /* a pending victim ends at once */
        }
    }
    if (free_voice) return free_voice;
    Voice *quiet = NULL;   /* every tail slot still fading (a flood of notes): cut the quietest */
    for (int i = 0; i < p->n_voices; i++) {
        Voice *v = &p->voices[i];
        if (v->state == FADING && (!quiet || v->level < quiet->level)) quiet = v;
    }
    upto(p, quiet, at);
    end_voice(p, quiet);
    return quiet;
}

/* pitch at gain (after the velocity curve), its timbre from the layers around velocity (MIDI 1..127). */
static void note_on(Pool *p, int32_t pitch, double gain, int32_t velocity, int at, int64_t hold) {
    if (pitch < p->params.low || pitch > p->params.high) { p->stats.out_of_range++; return; }
    Voice *v = allocate(p, pitch, at);
    voice_begin(v, pitch, gain, ++p->age, p->stats.frame + at, hold);
    v->gen = p->gen_now;
    pick_layers(p, velocity, v);
    v->done = at;
    int fresh;
    Pair s = take(p, v, &fresh);
    if (fresh) { p->stats.hits++; play(p, v, s, at); return; }
    p->stats.misses++;
    ask(p, R_RENDER, pitch, v->need);
    v->standin = s;
    /* The budget covers the whole way to the output, so one period of it is spent anyway; a render
     * can only be picked up at the start of a later period, before the deadline. */
    double wait_ms = p->params.budget_ms - 1000.0 * p->n / p->rate;
    int64_t deadline = v->on_frame + (int64_t)(wait_ms * p->rate / 1000.0);
    if (s.a < 0 || (p->params.expected_ms <= wait_ms && deadline >= p->stats.frame + p->n)) {
        v->state = PENDING;
        v->wait = deadline;
    } else {
        play_standin(p, v, at);
    }
}

static void note_off(Pool *p, int32_t pitch, int at) {
    for (int i = 0; i < p->n_voices; i++) {
        Voice *v = &p->voices[i];
        if (v->held && v->pitch == pitch && (v->state == PENDING || v->state == PLAYING)) {
            upto(p, v, at);
            v->held = 0;
            if (p->sustain_on) v->sustained = 1; else release_voice(p, v);
        }
    }
}

static void sustain(Pool *p, int on, int at) {
    p->sustain_on = on != 0;
    if (on) return;
    for (int i = 0; i < p->n_voices; i++) {
        Voice *v = &p->voices[i];
        if (v->sustained && !v->held && (v->state == PENDING || v->state == PLAYING)) {
            upto(p, v, at);
            v->sustained = 0;
            release_voice(p, v);
        }
    }
}

static void bend(Pool *p, int32_t value, int at) {
    double ratio = pow(2.0, value / 8192.0 * p->control[BEND_RANGE] / 12.0);
    if (ratio == p->ratio) return;
    for (int i = 0; i < p->n_voices; i++) upto(p, &p->voices[i], at);
    p->ratio = ratio;
}

static void panic(Pool *p, int at) {
    for (int i = 0; i < p->n_voices; i++) {
        Voice *v = &p->voices[i];
        if (v->state != FREE) { upto(p, v, at); fade_out(p, v); }
    }
    p->sustain_on = 0;
    p->ratio = 1.0;
}

static void all_notes_off(Pool *p, int at) {
    p->sustain_on = 0;
    for (int i = 0; i < p->n_voices; i++) {
        Voice *v = &p->voices[i];
        if (v->state == PENDING || v->state == PLAYING) {
            upto(p, v, at);
            v->held = v->sustained = 0;
            release_voice(p, v);
        }
    }
}

/* One MIDI channel message. Malformed ones are counted and dropped; controls go to Python. */
static void midi(Pool *p, const uint8_t *data, int size, int at) {
    if (size < 2 || data[0] < 0x80 || data[0] >= 0xF0) { p->stats.dropped++; return; }
    int status = data[0], kind = status & 0xF0, need = (kind == 0xC0 || kind == 0xD0) ? 2 : 3;
    if (size < need || data[1] > 127 || (need == 3 && data[2] > 127)) { p->stats.dropped++; return; }
    if (p->params.channel && (status & 0x0F) != p->params.channel - 1) return;
    if (kind == 0x90 && data[2] > 0) {
        note_on(p, data[1], p->params.velocity[data[2]], data[2], at, -1);
    } else if (kind == 0x80 || kind == 0x90) {
        note_off(p, data[1], at);
    } else if (kind == 0xB0) {
        if (data[1] == 64) sustain(p, data[2] >= 64, at);
        else if (data[1] == 120) panic(p, at);
        else if (data[1] == 123) all_notes_off(p, at);
        else emit(p, E_CONTROL, status, data[1], data[2]);
    } else if (kind == 0xC0) {
        emit(p, E_CONTROL, status, data[1], 0);
    } else if (kind == 0xE0) {
        bend(p, ((int32_t)data[2] << 7 | data[1]) - 8192, at);
    }
}

/* Slot s holds the new render of pitch's layer, made for generation gen; with the last layer of the
 * pitch in its batch, voices waiting get them. A render for a timbre change still to come keeps the
 * one it replaces (in earlier) for the notes before the change, when that one is of the generation
 * notes take now (else it was made for a change still to come as well, and earlier stays). */
static void publish(Pool *p, int32_t pitch, int32_t s, int32_t layer, int last, int32_t gen, const Command *c) {
    p->slots[s].wave = (const float *)(intptr_t)c->x;
    p->slots[s].length = c->y;
    p->slots[s].loop = (int64_t)c->f;
    p->slots[s].refs = 1;   /* the table's */
    p->slots[s].gen = gen;
    if (layer < 0 || layer >= MAX_LAYERS) { unref(p, s); return; }
    int32_t replaced = p->current[pitch][layer];
    if (replaced >= 0 && gen > p->gen_now && p->slots[replaced].gen <= p->gen_now) {
        unref(p, p->earlier[pitch][layer]);
        p->earlier[pitch][layer] = replaced;   /* the table's reference moves */
    } else {
        unref(p, replaced);
    }
    p->current[pitch][layer] = s;
    p->arriving[pitch] |= (uint8_t)(1 << layer);
    if (last) {
        arrived(p, pitch, p->arriving[pitch], gen);
        p->arriving[pitch] = 0;
    }
}

/* Notes take renders of generation gen from here on (a time-tagged timbre change's frame, or the
 * next period for an untimed one; the cache's generations: waeserver.live.cache). The renders kept
 * for notes before it are let go once the latest of their pitch and layer is of gen or before. */
static void timbre(Pool *p, int32_t gen) {
    p->gen_now = gen;
    for (int i = 0; i < N_PITCHES; i++)
        for (int l = 0; l < MAX_LAYERS; l++) {
            int32_t s = p->current[i][l];
            if (p->earlier[i][l] >= 0 && (s < 0 || p->slots[s].gen <= gen)) {
                unref(p, p->earlier[i][l]);
                p->earlier[i][l] = -1;
            }
        }
}

/* Every render of the table from layer `from` on let go. */
static void forget(Pool *p, int from) {
    for (int i = 0; i < N_PITCHES; i++)
        for (int l = from; l < MAX_LAYERS; l++) {
            unref(p, p->current[i][l]);
            unref(p, p->earlier[i][l]);
            p->current[i][l] = p->earlier[i][l] = -1;
        }
}

/* The layers' velocities from the parameters, n of them; renders of layers beyond are let go. */
static void set_layers(Pool *p, int n) {
    n = n < 1 ? 1 : (n > MAX_LAYERS ? MAX_LAYERS : n);
    forget(p, n);
    memcpy(p->layer_velocity, p->params.layer_velocity, sizeof p->layer_velocity);
    p->n_layers = n;
}

static void apply(Pool *p, const Command *c, int at) {
    switch (c->kind) {
    case C_NOTE_ON: note_on(p, c->a, c->f, c->c, at, c->x); break;
    case C_NOTE_OFF: note_off(p, c->a, at); break;
    case C_SUSTAIN: sustain(p, c->a, at); break;
    case C_BEND: bend(p, c->a, at); break;
    case C_PANIC: panic(p, at); break;
    case C_ALL_OFF: all_notes_off(p, at); break;
    case C_SYNC: emit(p, E_SYNCED, c->a, 0, 0); break;
    case C_PUBLISH: publish(p, c->a, c->b, c->c, c->d & 1, c->d >> 1, c); break;   /* d: last | generation << 1 */
    case C_LAYERS: set_layers(p, c->a); break;
    case C_EXTEND:   /* slot a, still holding the array at x, is now y frames long, looping from f */
        if (c->a >= 0 && c->a < MAX_SLOTS && p->slots[c->a].refs > 0 && p->slots[c->a].wave == (const float *)(intptr_t)c->x) {
            p->slots[c->a].length = c->y;
            p->slots[c->a].loop = (int64_t)c->f;
        }
        break;
    case C_GAIN: set_control(p, GAIN, c->f, at); break;
    case C_RELEASE: set_control(p, RELEASE, c->f, at); break;
    case C_BEND_RANGE: set_control(p, BEND_RANGE, c->f, at); break;
    case C_TIMBRE: timbre(p, c->a); break;
    case C_RECORD:   /* a new take (or none: y 0) from this period's first frame */
        p->take = (float *)(intptr_t)c->x;
        p->take_want = c->x ? c->y : 0;
        __atomic_store_n(&p->take_got, 0, __ATOMIC_RELAXED);
        p->take_from = p->stats.frame;
        __atomic_store_n(&p->take_id, c->a, __ATOMIC_RELEASE);
        break;
    case C_CLEAR: forget(p, 0); break;
    case C_MIDI: {
        uint8_t data[3] = {(uint8_t)c->a, (uint8_t)c->b, (uint8_t)c->x};   /* bytes, from JACK or Python */
        midi(p, data, (int)c->y, at);
        break;
    }
    }
}

/* --- the master limiter ------------------------------------------------------------------------ */
/* A loud chord must not hard-clip, and there is no room for a look-ahead buffer (it would add its
 * length to every note's latency). So the gain follows the mix's peak level, which a new peak
 * raises at once (the gain drops on the very frame that needs it), which holds for LIMIT_HOLD_S and
 * then decays over LIMIT_RELEASE_S. The gain maps a peak level e to e' = K + (C - K) tanh((e - K) / (C - K)),
 * whose slope is 1 at the knee K, so it sets in without a kink; and since every frame's level is at
 * most the peak level, no frame leaves above C. Below K the gain is exactly 1: a mix that stays
 * below the knee passes bit for bit. Both outputs carry this same mono mix, so its peak is theirs. */
static double limit_gain(double env) {
    const double k = LIMIT_KNEE, room = LIMIT_CEILING - LIMIT_KNEE;
    return (k + room * tanh((env - k) / room)) / env;
}

static void limit(Pool *p, const float *buf, float *out, int n) {
    double env = p->limit_env, gain = env > LIMIT_KNEE ? limit_gain(env) : 1.0;
    int32_t hold = p->limit_hold;
    for (int j = 0; j < n; j++) {
        float x = buf[j], a = fabsf(x);
        if (!(a <= FLT_MAX)) x = a = 0.0f;   /* a NaN or infinity from a render: silence, not a stuck gain */
        if (a >= env) {   /* a new peak */
            env = a;
            hold = p->limit_hold_len;
            gain = env > LIMIT_KNEE ? limit_gain(env) : 1.0;
        } else if (hold > 0) {
            hold--;
        } else if (env > LIMIT_KNEE) {
            env *= p->limit_release;
            gain = env > LIMIT_KNEE ? limit_gain(env) : 1.0;
        } else {
            env = a;   /* below the knee nothing depends on it: track the level, never decay to denormals */
        }
        if (gain != 1.0) {
            x = (float)((double)x * gain);
            p->stats.limited++;
        }
        out[j] = x > 1.0f ? 1.0f : (x < -1.0f ? -1.0f : x);   /* a last guard the limiter leaves nothing to */
    }
    p->limit_env = env;
    p->limit_hold = hold;
}

/* --- commands held for a frame --------------------------------------------------------------------- */
static int timed_before(const Timed *a, const Timed *b) {
    return a->c.when < b->c.when || (a->c.when == b->c.when && a->seq < b->seq);
}

static int hold(Pool *p, const Command *c) {
    if (p->n_timed == MAX_TIMED) return 0;
    Timed t = {*c, p->timed_seq++};
    int i = p->n_timed++;
    for (int up; i > 0 && timed_before(&t, &p->timed[up = (i - 1) / 2]); i = up) p->timed[i] = p->timed[up];
    p->timed[i] = t;
    return 1;
}

static void pop_held(Pool *p) {
    Timed last = p->timed[--p->n_timed];
    int n = p->n_timed, i = 0;
    for (int k; (k = 2 * i + 1) < n; i = k) {
        if (k + 1 < n && timed_before(&p->timed[k + 1], &p->timed[k])) k++;
        if (!timed_before(&p->timed[k], &last)) break;
        p->timed[i] = p->timed[k];
    }
    if (n > 0) p->timed[i] = last;
}

/* --- periods ------------------------------------------------------------------------------------ */
static void begin(Pool *p, int n) {
    p->n = n;
    memset(p->buf, 0, (size_t)n * sizeof(float));
    for (int i = 0; i < p->n_voices; i++) p->voices[i].done = 0;
    p->gain_done = 0;
    for (int c = GAIN; c <= BEND_RANGE; c++) {   /* untimed changes, in force from this period's first frame */
        uint32_t changes = __atomic_load_n(&p->params.changes[c], __ATOMIC_ACQUIRE);
        if (changes != p->seen[c]) {
            p->seen[c] = changes;
            set_control(p, c, p->params.control[c], 0);
        }
    }
    while (ring_ready(&p->cmd_ring)) {
        const Command *c = &p->commands[p->cmd_ring.tail & (CMD_RING - 1)];
        if (c->when < 0 || !hold(p, c)) {
            if (c->when >= 0) p->stats.timed_overflow++;
            apply(p, c, 0);
        }
        ring_consumed(&p->cmd_ring);
    }
    int64_t end = p->stats.frame + n;
    p->n_due = 0;
    while (p->n_timed > 0 && p->timed[0].c.when < end) {   /* this period's, at their frames */
        Command *d = &p->due[p->n_due++];
        *d = p->timed[0].c;
        if (d->when < p->stats.frame) p->stats.timed_late++;
        d->at = d->when > p->stats.frame ? (int32_t)(d->when - p->stats.frame) : 0;
        pop_held(p);
    }
    for (int i = 0; i < p->n_voices; i++) {   /* waited as long as the budget allows: the last render */
        Voice *v = &p->voices[i];
        if (v->state == PENDING && v->standin.a >= 0 && v->wait < end) play_standin(p, v, 0);
    }
}

static void finish(Pool *p, float *out) {
    int n = p->n;
    for (int i = 0; i < p->n_voices; i++)
        if (p->voices[i].state != FREE) upto(p, &p->voices[i], n);
    gain_upto(p, n);
    limit(p, p->buf, out, n);
    p->stats.frame += n;
}

/* --- API (ctypes) ------------------------------------------------------------------------------- */
/* A new output rate (only while the pool is not being processed). */
void voices_set_rate(Pool *p, int rate) {
    p->rate = rate;
    p->fade = (int)(FADE_S * rate) > 1 ? (int)(FADE_S * rate) : 1;
    p->xfade_len = (int)(XFADE_S * rate) > 1 ? (int)(XFADE_S * rate) : 1;
    p->limit_hold_len = (int32_t)(LIMIT_HOLD_S * rate);
    p->limit_release = exp(-1.0 / (LIMIT_RELEASE_S * rate));
}

Pool *voices_new(int rate, int polyphony, int max_period) {
    Pool *p = calloc(1, sizeof(Pool));
    if (!p) return NULL;
    p->polyphony = polyphony;
    p->n_voices = 2 * polyphony;   /* as many tail slots for stolen voices fading out */
    p->voices = calloc((size_t)p->n_voices, sizeof(Voice));
    p->max_period = max_period;
    p->buf = calloc((size_t)max_period, sizeof(float));
    p->src = calloc((size_t)max_period, sizeof(float));
    p->old = calloc((size_t)max_period, sizeof(float));
    p->tmp = calloc((size_t)max_period, sizeof(float));
    if (!p->voices || !p->buf || !p->src || !p->old || !p->tmp) {
        free(p->voices); free(p->buf); free(p->src); free(p->old); free(p->tmp); free(p);
        return NULL;
    }
    for (int i = 0; i < p->n_voices; i++) {
        p->voices[i].slot = p->voices[i].old = p->voices[i].standin = NONE;
        p->voices[i].pitch = -1;
    }
    for (int i = 0; i < N_PITCHES; i++)
        for (int l = 0; l < MAX_LAYERS; l++) p->current[i][l] = -1;
    p->n_layers = 1;
    p->ratio = 1.0;
    p->params.control[GAIN] = p->control[GAIN] = p->gain_now = 1.0;
    p->params.control[RELEASE] = p->control[RELEASE] = 0.3;
    p->params.control[BEND_RANGE] = p->control[BEND_RANGE] = 2.0;
    for (int i = 0; i < N_PITCHES; i++)
        for (int l = 0; l < MAX_LAYERS; l++) p->earlier[i][l] = -1;
    p->params.budget_ms = 10.0;
    p->params.expected_ms = 1e9;
    p->params.low = 0;
    p->params.high = N_PITCHES - 1;
    p->params.wake_fd = -1;
    for (int i = 0; i < 128; i++) p->params.velocity[i] = i / 127.0f;
    voices_set_rate(p, rate);
    return p;
}

void voices_free(Pool *p) {
    if (!p) return;
    free(p->voices); free(p->buf); free(p->src); free(p->old); free(p->tmp);
    free(p);
}

Params *voices_params(Pool *p) { return &p->params; }
Stats *voices_stats(Pool *p) { return &p->stats; }
Voice *voices_voices(Pool *p) { return p->voices; }
uint8_t *voices_fresh(Pool *p) { return p->fresh; }
int64_t *voices_played(Pool *p) { return p->played; }
int32_t *voices_current(Pool *p) { return &p->current[0][0]; }
double voices_ratio(Pool *p) { return p->ratio; }
int voices_sustain_on(Pool *p) { return p->sustain_on; }
int voices_sizes(int what) {   /* for the Python side's check of its mirror of these structs */
    switch (what) {
    case 0: return (int)sizeof(Params);
    case 1: return (int)sizeof(Stats);
    case 2: return (int)sizeof(Voice);
    case 3: return (int)sizeof(Command);
    case 4: return N_PITCHES;
    case 5: return MAX_SLOTS;
    case 6: return MAX_LAYERS;
    default: return 0;
    }
}

/* Queue a command for the next period (one producer at a time: the caller serialises). */
int voices_command(Pool *p, int32_t kind, int32_t at, int32_t a, int32_t b, int32_t c_, int32_t d, int64_t x,
                   int64_t y, double f, int64_t when) {
    if (!ring_space(&p->cmd_ring, CMD_RING)) return 0;
    Command *c = &p->commands[p->cmd_ring.head & (CMD_RING - 1)];
    c->kind = kind; c->at = at; c->a = a; c->b = b; c->c = c_; c->d = d; c->x = x; c->y = y; c->f = f;
    c->when = when;
    ring_published(&p->cmd_ring);
    return 1;
}

/* Commands queued and not yet applied, copied (oldest first) into out; how many. */
int voices_queued(Pool *p, Command *out, int max) {
    uint32_t tail = __atomic_load_n(&p->cmd_ring.tail, __ATOMIC_ACQUIRE), head = p->cmd_ring.head;
    int n = 0;
    for (uint32_t i = tail; i != head && n < max; i++) out[n++] = p->commands[i & (CMD_RING - 1)];
    return n;
}

/* Up to max items of ring r (size entries of item bytes at items) into out; how many. */
static int drain(Ring *r, uint32_t size, const void *items, size_t item, void *out, int max) {
    int n = 0;
    for (; n < max && ring_ready(r); n++) {
        memcpy((char *)out + (size_t)n * item, (const char *)items + (r->tail & (size - 1)) * item, item);
        ring_consumed(r);
    }
    return n;
}

int voices_events(Pool *p, Event *out, int max) {
    return drain(&p->event_ring, EVENT_RING, p->events, sizeof(Event), out, max);
}

int voices_requests(Pool *p, Request *out, int max) {
    return drain(&p->request_ring, REQUEST_RING, p->requests, sizeof(Request), out, max);
}

int voices_has_requests(Pool *p) { return ring_ready(&p->request_ring); }

/* n frames (any number) into out, with events: commands at frame offsets ``at``, ascending (JACK
 * hands its MIDI as C_MIDI commands; the offline clock and the tests any command), merged in frame
 * order with the held commands due in the period (a held one first on the same frame). */
void voices_process(Pool *p, float *out, int n, const Command *events, int n_events) {
    int done = 0, e = 0;
    while (done < n) {   /* in pieces of at most max_period frames */
        int chunk = n - done < p->max_period ? n - done : p->max_period;
        begin(p, chunk);
        int pos = 0, d = 0;
        for (;;) {
            int from_events = e < n_events && (events[e].at < done + chunk || done + chunk == n);
            if (!from_events && d == p->n_due) break;
            const Command *c;
            int at;
            if (from_events && (d == p->n_due || events[e].at - done < p->due[d].at)) {
                c = &events[e++];
                at = c->at - done;
            } else {
                c = &p->due[d++];
                at = c->at;
            }
            pos = at < pos ? pos : (at > chunk ? chunk : at);
            apply(p, c, pos);
        }
        finish(p, out + done);
        done += chunk;
    }
}

/* Held commands waiting for their frame (read from any thread: a count, maybe a period old). */
int voices_held(Pool *p) { return __atomic_load_n(&p->n_timed, __ATOMIC_RELAXED); }

/* The clock of the latest period (see Pool.anchor_*); 0 before JACK's first. */
int voices_anchor(Pool *p, int64_t *frame, int64_t *ns, double *period_ns, int32_t *frames) {
    for (;;) {
        uint32_t seq = __atomic_load_n(&p->anchor_seq, __ATOMIC_ACQUIRE);
        if (seq == 0) return 0;
        if (seq & 1) continue;
        *frame = p->anchor_frame; *ns = p->anchor_ns; *period_ns = p->anchor_period_ns; *frames = p->anchor_frames;
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&p->anchor_seq, __ATOMIC_RELAXED) == seq) return 1;
    }
}


/* --- JACK ----------------------------------------------------------------------------------------- */
static int64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* The period's n input frames into the armed take, if any (JACK's in_1 after each period; the tests
 * call it directly): a copy and nothing else. The take is let go once full. */
void voices_capture(Pool *p, const float *in, int n) {
    if (!p->take) return;
    int64_t got = p->take_got, k = p->take_want - got < n ? p->take_want - got : n;
    if (got == 0) p->take_start_ns = now_ns();
    memcpy(p->take + got, in, (size_t)k * sizeof(float));
    if (got + k == p->take_want) {
        p->take = NULL;
        p->take_done_ns = now_ns();
    }
    __atomic_store_n(&p->take_got, got + k, __ATOMIC_RELEASE);
}

/* The take's progress: its id (that of the latest C_RECORD applied; 0 none), frames captured so far
 * (the take is complete when they are those asked for), its first pool frame, and when its first and
 * last periods were copied (CLOCK_MONOTONIC ns; valid once it is complete). */
int64_t voices_take(Pool *p, int32_t *id, int64_t *from, int64_t *start_ns, int64_t *done_ns) {
    *id = __atomic_load_n(&p->take_id, __ATOMIC_ACQUIRE);
    int64_t got = __atomic_load_n(&p->take_got, __ATOMIC_ACQUIRE);
    *from = p->take_from;
    *start_ns = p->take_start_ns;
    *done_ns = p->take_done_ns;
    return got;
}

/* Re-anchored every period from JACK's DLL, which follows the sound card's clock: a time maps to
 * the frame the card plays then, however the two clocks drift apart. */
static void anchor(Pool *p, uint32_t frames) {
    uint32_t now_frames;
    uint64_t start_us, next_us;
    float period_us;
    if (!p->cycle_times || p->cycle_times(p->client, &now_frames, &start_us, &next_us, &period_us) != 0) return;
    int64_t mono = now_ns(), jack_ns = (int64_t)p->jack_time() * 1000;   /* JACK's clock to CLOCK_MONOTONIC */
    uint32_t seq = p->anchor_seq;
    __atomic_store_n(&p->anchor_seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    p->anchor_frame = p->stats.frame;
    p->anchor_ns = (int64_t)start_us * 1000 + (mono - jack_ns);
    p->anchor_period_ns = (double)period_us * 1000.0;
    p->anchor_frames = (int32_t)frames;
    __atomic_store_n(&p->anchor_seq, seq + 2, __ATOMIC_RELEASE);
}

static int jack_process(uint32_t frames, void *arg) {
    Pool *p = arg;
    int64_t t0 = now_ns();
    if (!p->thread_known) {   /* for voices_thread_mode; reads thread-local storage, no system call */
        p->thread = pthread_self();
        __atomic_store_n(&p->thread_known, 1, __ATOMIC_RELEASE);
    }
    float *out_1 = p->port_buffer(p->out_1, frames), *out_2 = p->port_buffer(p->out_2, frames);
    void *midi_buffer = p->port_buffer(p->midi_in, frames);
    uint32_t count = p->midi_count(midi_buffer);
    int n_events = 0;
    for (uint32_t i = 0; i < count; i++) {
        JackMidiEvent ev;
        if (p->midi_get(&ev, midi_buffer, i) != 0) continue;
        if (n_events == MAX_MIDI || ev.size < 1 || ev.size > 3) { p->stats.dropped++; continue; }
        Command *m = &p->midi[n_events++];
        m->kind = C_MIDI;
        m->at = (int32_t)ev.time;
        m->a = ev.buffer[0];
        m->b = ev.size > 1 ? ev.buffer[1] : 0;
        m->x = ev.size > 2 ? ev.buffer[2] : 0;
        m->y = (int64_t)ev.size;
    }
    anchor(p, frames);
    voices_process(p, out_1, (int)frames, p->midi, n_events);
    memcpy(out_2, out_1, frames * sizeof(float));
    if (p->take) voices_capture(p, p->port_buffer(p->in_1, frames), (int)frames);
    p->stats.took_ns[p->stats.calls % TIMED_PERIODS] = now_ns() - t0;
    p->stats.calls++;
    return 0;
}

/* Once on each thread JACK starts for this client, the process thread among them, before its first
 * period (and before JACK makes it realtime, when JACK is). Not realtime, it is an ordinary thread,
 * and a busy machine's other programs and the daemon's own Python threads would take turns with
 * it: a high priority, where allowed. */
static void jack_thread_init(void *arg) {
    Pool *p = arg;
    /* Linux 6.12 and later also take a slice request for an ordinary thread. Shorter than the
     * others' (0.7 ms times 1 + log2(cores): 1.4 ms on 2 cores), it lets the thread, woken,
     * preempt a running one at once instead of waiting for that one's slice to end; long enough
     * to cover a callback (well under 0.5 ms), it is not preempted itself in the middle of one,
     * as it was with 0.1 ms (callbacks of 3 to 4 ms now and then). */
    struct sched_attr_v0 { uint32_t size, policy; uint64_t flags; int32_t nice; uint32_t priority;
                           uint64_t runtime, deadline, period; };
    struct sched_attr_v0 attr = {sizeof attr, SCHED_OTHER, 0, JACK_THREAD_NICE, 0, JACK_THREAD_SLICE_NS, 0, 0}, got;
    if (sched_getscheduler(0) != SCHED_OTHER) return;   /* already realtime: not to be undone */
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (syscall(SYS_sched_setattr, tid, &attr, 0) == 0) {
        /* older kernels accept the request and ignore it; they also read back no slice */
        p->thread_nice = syscall(SYS_sched_getattr, tid, &got, sizeof got, 0) == 0
                         && got.runtime == JACK_THREAD_SLICE_NS ? 4 : 2;
    } else {
        p->thread_nice = setpriority(PRIO_PROCESS, (id_t)tid, JACK_THREAD_NICE) == 0 ? 2 : 3;
    }
}

/* How JACK's process thread runs: 0 not started, 1 realtime, 2 at JACK_THREAD_NICE, 3 ordinary,
 * 4 at JACK_THREAD_NICE with JACK_THREAD_SLICE_NS. */
int voices_thread_mode(Pool *p) {
    int policy;
    struct sched_param param;
    if (!__atomic_load_n(&p->thread_known, __ATOMIC_ACQUIRE)) return 0;
    if (pthread_getschedparam(p->thread, &policy, &param) == 0 && (policy == SCHED_FIFO || policy == SCHED_RR))
        return 1;
    return p->thread_nice;
}

/* Make p the process callback of a JACK client (before it is activated); 0 on success. */
int voices_attach_jack(Pool *p, void *client, void *out_1, void *out_2, void *midi_in, void *in_1) {
    void *lib = dlopen("libjack.so.0", RTLD_NOW | RTLD_NOLOAD);
    if (!lib) lib = dlopen("libjack.so.0", RTLD_NOW);
    if (!lib) return -1;
    p->port_buffer = (port_buffer_fn)dlsym(lib, "jack_port_get_buffer");
    p->midi_count = (midi_count_fn)dlsym(lib, "jack_midi_get_event_count");
    p->midi_get = (midi_get_fn)dlsym(lib, "jack_midi_event_get");
    set_process_fn set_process = (set_process_fn)dlsym(lib, "jack_set_process_callback");
    set_thread_init_fn set_thread_init = (set_thread_init_fn)dlsym(lib, "jack_set_thread_init_callback");
    p->cycle_times = (cycle_times_fn)dlsym(lib, "jack_get_cycle_times");
    p->jack_time = (jack_time_fn)dlsym(lib, "jack_get_time");
    if (!p->port_buffer || !p->midi_count || !p->midi_get || !set_process || !set_thread_init || !p->cycle_times
        || !p->jack_time) return -2;
    p->client = client;
    p->out_1 = out_1; p->out_2 = out_2; p->midi_in = midi_in; p->in_1 = in_1;
    p->thread_nice = p->thread_known = 0;
    if (set_thread_init(client, jack_thread_init, p) != 0) return -3;
    return set_process(client, jack_process, p);
}
