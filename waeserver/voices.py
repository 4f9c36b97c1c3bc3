"""The voice pool: polyphony, envelopes, sustain, pitch bend and stealing, mixed from rendered notes.

Everything here runs on the audio thread (or the offline clock): :meth:`VoicePool.begin`, then
the period's actions at their frame offsets (``at``), then :meth:`VoicePool.finish`. Each voice
is mixed lazily: an action that changes a voice first mixes that voice up to the action's frame,
and ``finish`` mixes every voice to the end of the period. So a period costs one mix per sounding
voice plus one per event, not one per voice per event (a 32-note chord whose notes arrive on 32
different frames would otherwise mix the whole pool 33 times). Other threads talk to the pool only
through :attr:`VoicePool.posts` (see :class:`Poster`), applied at the start of the next period.
Mixing uses preallocated buffers and never waits for the renderer: a note-on takes the cache's
render as it is (see :meth:`VoicePool.note_on` for the stand-in policy). A render with a loop
(:class:`~waeserver.cache.Note`) goes back to its loop start whenever a voice reaches its end, so a
sustained note sounds until its envelope ends it.

Stealing (when ``polyphony`` voices sound): a free slot, else the oldest released voice, else the
oldest voice of the same pitch, else the oldest voice. The stolen voice fades out over
``FADE_S`` in one of the extra tail slots while the new note starts at once.
"""

from __future__ import annotations

from collections import deque

import numpy as np

FADE_S = 0.005        # steal and panic fade
XFADE_S = 0.010       # stand-in to fresh render crossfade
ARRIVALS_PER_PERIOD = 4  # a chord's fresh renders start their crossfades over a few periods, not in one
LATENCY_SLOTS = 256   # recent note latencies kept for /wae/status

FREE, PENDING, PLAYING, RELEASED, FADING = range(5)


class Voice:
    """One sounding note: a render (``audio`` and its ``loop`` start, see
    :class:`~waeserver.cache.Note`), a read position (fractional under pitch bend) and an envelope."""

    __slots__ = ("state", "pitch", "gain", "audio", "loop", "pos", "level", "slope", "held", "sustained", "age",
                 "released_at", "standin", "waiting", "wait", "hold", "on_frame", "old", "xfade", "done")
    # wait: deadline frame; done: frames of this period already mixed

    def __init__(self):
        self.state = FREE
        self.done = 0
        self.begin(-1, 0.0, 0, 0, -1)
        self.held = False

    def begin(self, pitch: int, gain: float, age: int, on_frame: int, hold: int) -> None:
        self.pitch, self.gain, self.age, self.on_frame, self.hold = pitch, gain, age, on_frame, hold
        self.pos, self.level, self.slope = 0.0, 1.0, 0.0
        self.held, self.sustained, self.waiting = True, False, False
        self.released_at, self.wait, self.xfade = 0, 0, 0
        self.audio = self.old = self.standin = None
        self.loop = -1


class Poster:
    """The pool's note and pedal actions for threads other than the audio thread (OSC, mido)."""

    def __init__(self, pool: "VoicePool"):
        self._posts = pool.posts

    def note_on(self, pitch: int, gain: float, at: int = 0, hold: int = -1) -> None:
        self._posts.append(("note_on", (pitch, gain, 0, hold)))

    def note_off(self, pitch: int, at: int = 0) -> None:
        self._posts.append(("note_off", (pitch,)))

    def sustain(self, on: bool, at: int = 0) -> None:
        self._posts.append(("sustain", (on,)))

    def bend(self, value: int, at: int = 0) -> None:
        self._posts.append(("bend", (value,)))

    def panic(self, at: int = 0) -> None:
        self._posts.append(("panic", ()))

    def all_notes_off(self, at: int = 0) -> None:
        self._posts.append(("all_notes_off", ()))

    def sync(self, token) -> None:
        self._posts.append(("sync", (token,)))


class VoicePool:
    """``polyphony`` voices (plus as many tail slots for fading stolen voices) at ``rate`` Hz.

    ``cache`` is read for renders; ``budget_ms`` is the latency budget of a note whose render is
    not fresh. ``events`` receives ``("n_go", pitch)``, ``("n_end", pitch)`` and
    ``("synced", token)`` for the notification thread.
    """

    def __init__(self, rate: int, cache, polyphony: int = 32, budget_ms: float = 10.0, max_period: int = 8192):
        self.cache = cache
        self.polyphony = int(polyphony)
        self.voices = [Voice() for _ in range(2 * self.polyphony)]
        self.budget_ms = float(budget_ms)
        self.posts: deque[tuple] = deque()
        self.events: deque[tuple] = deque(maxlen=8192)
        self.poster = Poster(self)
        self.gain = 1.0
        self.release = 0.3
        self.bend_range = 2.0
        self.sustain_on = False
        self.ratio = 1.0           # playback speed from pitch bend
        self.frame = 0             # frames since start, at the beginning of this period
        self.hits = self.misses = self.standins = self.out_of_range = 0
        self.latency = np.zeros(LATENCY_SLOTS, np.float64)   # frames from note-on to sound
        self.n_latency = 0
        self._age = 0
        self._gain_now = 1.0
        self.set_rate(rate, max_period)

    def set_rate(self, rate: int, max_period: int = 8192) -> None:
        """Size the buffers for ``rate`` Hz and periods up to ``max_period`` frames."""
        self.rate = int(rate)
        self.fade = max(1, int(FADE_S * self.rate))
        self.xfade_len = max(1, int(XFADE_S * self.rate))
        n = int(max_period)
        self.max_period = n
        self.buf = np.zeros(n, np.float32)
        self._ramp = np.arange(1, n + 1, dtype=np.float64)
        self._pos = np.zeros(n, np.float64)
        self._i0 = np.zeros(n, np.int64)
        self._i1 = np.zeros(n, np.int64)
        self._a = np.zeros(n, np.float32)
        self._b = np.zeros(n, np.float32)
        self._src = np.zeros(n, np.float32)
        self._old = np.zeros(n, np.float32)
        self._env = np.zeros(n, np.float64)
        self._n = 0

    # --- queries -----------------------------------------------------------------------------
    def sounding(self) -> int:
        return sum(1 for v in self.voices if v.state != FREE)

    def latency_ms(self) -> tuple[float, float]:
        """p50 and p99 of recent note-on to sound delays inside the engine (ms)."""
        n = min(self.n_latency, LATENCY_SLOTS)
        if n == 0:
            return 0.0, 0.0
        p50, p99 = np.percentile(self.latency[:n], [50, 99]) * 1000.0 / self.rate
        return float(p50), float(p99)

    # --- period --------------------------------------------------------------------------------
    def begin(self, n: int) -> None:
        """Start a period of ``n`` frames: apply posted actions and newly rendered notes."""
        self._n = n
        self.buf[:n] = 0.0
        for v in self.voices:
            v.done = 0
        while self.posts:
            name, args = self.posts.popleft()
            if name == "sync":
                self.events.append(("synced", args[0]))
            else:
                getattr(self, name)(*args)
        arrivals = self.cache.arrivals
        if arrivals and not any(v.state == PENDING or v.waiting for v in self.voices):
            arrivals.clear()      # refills nobody waits for
        for _ in range(min(len(arrivals), ARRIVALS_PER_PERIOD)):
            pitch, note = arrivals.popleft()
            self._arrived(pitch, note)
        end = self.frame + n
        for v in self.voices:    # waited as long as the budget allows: the last render plays
            if v.state == PENDING and v.standin is not None and v.wait < end:
                self._play_standin(v, 0)

    def finish(self, out: np.ndarray) -> None:
        """Mix every voice to the end of the period and write it to ``out [n]``: master gain (ramped
        when it changed), clipped to ±1."""
        n = self._n
        for v in self.voices:
            if v.state != FREE:
                self._upto(v, n)
        buf = self.buf[:n]
        target = self.gain
        if target != self._gain_now:
            env = self._env[:n]
            np.multiply(self._ramp[:n], (target - self._gain_now) / n, out=env)
            env += self._gain_now
            np.multiply(buf, env, out=buf)
            self._gain_now = target
        elif target != 1.0:
            buf *= target
        np.clip(buf, -1.0, 1.0, out=out[:n])
        self.frame += n

    def run(self, out: np.ndarray, events: list[tuple[int, str, tuple]] = ()) -> None:
        """One period into ``out``, with ``(offset, action, args)`` events at their frames."""
        n = len(out)
        self.begin(n)
        pos = 0
        for offset, action, args in events:
            pos = min(max(offset, pos), n)
            getattr(self, action)(*args, at=pos)
        self.finish(out)

    # --- actions (audio thread) ----------------------------------------------------------------
    def note_on(self, pitch: int, gain: float, at: int = 0, hold: int = -1) -> None:
        """Start ``pitch`` at ``gain`` (0..1, after the velocity curve); ``hold`` frames, -1 until off.

        A fresh render plays at once. Otherwise the pitch is requested from the renderer: if a
        priority render is expected within the latency budget less the period the output takes
        anyway, the voice waits for it that long at most; else (or when the budget runs out) the most recent render of the pitch plays as a
        stand-in and is crossfaded to the new render when it arrives.
        """
        cache = self.cache
        if not cache.playable(pitch):
            self.out_of_range += 1
            return
        v = self._allocate(pitch, at)
        self._age += 1
        v.begin(pitch, gain, self._age, self.frame + at, hold)
        v.done = at
        note, fresh = cache.take(pitch)
        if fresh:
            self.hits += 1
            self._play(v, note, at)
            return
        self.misses += 1
        cache.request(pitch)
        v.standin = note
        # The budget covers the whole way to the output, so one period of it is spent anyway; a
        # render can only be picked up at the start of a later period, before the deadline.
        wait_ms = self.budget_ms - 1000.0 * self._n / self.rate
        deadline = v.on_frame + int(wait_ms * self.rate / 1000.0)
        if note is None or (cache.expected_ms <= wait_ms and deadline >= self.frame + self._n):
            v.state = PENDING
            v.wait = deadline
        else:
            self._play_standin(v, at)

    def note_off(self, pitch: int, at: int = 0) -> None:
        for v in self.voices:
            if v.held and v.pitch == pitch and v.state in (PENDING, PLAYING):
                self._upto(v, at)
                v.held = False
                if self.sustain_on:
                    v.sustained = True
                else:
                    self._release(v)

    def sustain(self, on: bool, at: int = 0) -> None:
        self.sustain_on = bool(on)
        if not on:
            for v in self.voices:
                if v.sustained and not v.held and v.state in (PENDING, PLAYING):
                    self._upto(v, at)
                    v.sustained = False
                    self._release(v)

    def bend(self, value: int, at: int = 0) -> None:
        """14-bit pitch bend, centred on 0 (-8192..8191), over ``bend_range`` semitones."""
        ratio = 2.0 ** (value / 8192.0 * self.bend_range / 12.0)
        if ratio != self.ratio:
            for v in self.voices:
                self._upto(v, at)
            self.ratio = ratio

    def panic(self, at: int = 0) -> None:
        """Every voice off with a short fade; pedal up and bend centred."""
        for v in self.voices:
            if v.state != FREE:
                self._upto(v, at)
                self._fade_out(v)
        self.sustain_on = False
        self.ratio = 1.0

    def all_notes_off(self, at: int = 0) -> None:
        """Release every note, sustained ones too."""
        self.sustain_on = False
        for v in self.voices:
            if v.state in (PENDING, PLAYING):
                self._upto(v, at)
                v.held = v.sustained = False
                self._release(v)

    # --- internals ---------------------------------------------------------------------------
    def _allocate(self, pitch: int, at: int) -> Voice:
        free = None
        active = 0
        for v in self.voices:
            if v.state == FREE:
                if free is None:
                    free = v
            elif v.state != FADING:
                active += 1
        if active >= self.polyphony:
            released = [v for v in self.voices if v.state == RELEASED]
            same = [v for v in self.voices if v.pitch == pitch and v.state in (PENDING, PLAYING)]
            candidates = released or same or [v for v in self.voices if v.state in (PENDING, PLAYING)]
            victim = min(candidates, key=lambda v: v.released_at if v.state == RELEASED else v.age)
            self._upto(victim, at)
            self._fade_out(victim)
            if free is None and victim.state == FREE:   # a pending victim ends at once
                free = victim
        if free is not None:
            return free
        # every tail slot still fading (a flood of notes): cut the quietest tail
        v = min((v for v in self.voices if v.state == FADING), key=lambda v: v.level)
        self._upto(v, at)
        self._end(v)
        return v

    def _play(self, v: Voice, note, at: int) -> None:
        v.audio, v.loop = note
        v.state = PLAYING
        self._record_latency(self.frame + at - v.on_frame)
        self.events.append(("n_go", v.pitch))
        if not v.held and not v.sustained:  # let go while it waited: a short note, still heard
            self._release(v)

    def _play_standin(self, v: Voice, at: int) -> None:
        self.standins += 1
        v.waiting = True
        self._play(v, v.standin, at)
        v.standin = None

    def _arrived(self, pitch: int, note) -> None:
        per_note = self.cache.target is not None and self.cache.target[2]
        for v in self.voices:
            if v.pitch != pitch or v.state == FREE:
                continue
            if v.state == PENDING:
                v.standin = None
                self._play(v, note, 0)
            elif v.waiting:
                v.old, v.xfade = v.audio, self.xfade_len
                v.audio, v.loop = note
            else:
                continue
            v.waiting = False
            if per_note:  # this draw is this note's now; the next note of the pitch gets another
                self.cache.take(pitch)
                return

    def _record_latency(self, frames: int) -> None:
        self.latency[self.n_latency % LATENCY_SLOTS] = max(0, frames)
        self.n_latency += 1

    def _release(self, v: Voice) -> None:
        if v.state == PENDING:  # released as soon as it starts (see _play)
            return
        v.state = RELEASED
        self._age += 1
        v.released_at = self._age
        v.slope = -v.level / max(self.fade, self.release * self.rate)

    def _fade_out(self, v: Voice) -> None:
        if v.state == PENDING:
            self._end(v)
            return
        v.state = FADING
        v.held = v.sustained = False
        v.slope = -v.level / self.fade

    def _end(self, v: Voice) -> None:
        if v.state in (PLAYING, RELEASED, FADING):
            self.events.append(("n_end", v.pitch))
        v.state = FREE
        v.audio = v.old = v.standin = None

    def _read(self, audio: np.ndarray, pos: float, n: int, out: np.ndarray) -> int:
        """Read ``n`` frames of ``audio`` from ``pos`` at the bend ratio into ``out``; frames read."""
        ratio = self.ratio
        length = len(audio)
        if ratio == 1.0 and pos == int(pos):
            i = int(pos)
            k = max(0, min(n, length - i))
            out[:k] = audio[i:i + k]
            return k
        k = max(0, min(n, int(np.ceil((length - 1 - pos) / ratio))))
        if k == 0:
            return 0
        idx, i0, i1, a, b = self._pos[:k], self._i0[:k], self._i1[:k], self._a[:k], self._b[:k]
        np.multiply(self._ramp[:k], ratio, out=idx)
        idx += pos - ratio                 # ramp starts at 1
        np.copyto(i0, idx, casting="unsafe")
        np.add(i0, 1, out=i1)
        np.minimum(i1, length - 1, out=i1)
        np.take(audio, i0, out=a)
        np.take(audio, i1, out=b)
        idx -= i0                          # fractional part
        np.subtract(b, a, out=b)
        np.multiply(b, idx, out=b, casting="same_kind")
        np.add(a, b, out=out[:k])
        return k

    def _upto(self, v: Voice, end: int) -> None:
        """Mix ``v`` from where it stands in this period up to frame ``end``."""
        start = v.done
        if end <= start:
            return
        v.done = end
        if v.state == FREE or v.state == PENDING:   # pending: silent until its render arrives or its deadline
            return
        self._mix_voice(v, start, end)

    def _mix_voice(self, v: Voice, start: int, end: int) -> None:
        n = end - start
        if v.hold > 0:
            v.hold -= n
            if v.hold <= 0 and v.held:
                v.held = False
                if self.sustain_on:
                    v.sustained = True
                else:
                    self._release(v)
        src = self._src
        audio, ratio = v.audio, self.ratio
        k = self._read(audio, v.pos, n, src)
        pos = v.pos + k * ratio
        if k < n and v.loop >= 0:   # a sustained note goes back to its loop start
            span = len(audio) - v.loop
            while k < n:
                pos -= span
                got = self._read(audio, pos, n - k, src[k:])
                pos += got * ratio
                k += got
                if got == 0:
                    break
        if v.xfade > 0 and v.old is not None:
            kx = min(k, v.xfade)
            old = self._old
            ko = self._read(v.old, v.pos, kx, old)
            old[ko:kx] = 0.0
            w = self._env[:kx]                 # the old render's weight, falling to 0
            np.multiply(self._ramp[:kx], -1.0 / self.xfade_len, out=w)
            w += v.xfade / self.xfade_len
            np.subtract(old[:kx], src[:kx], out=old[:kx])
            np.multiply(old[:kx], w, out=old[:kx], casting="same_kind")
            src[:kx] += old[:kx]
            v.xfade -= kx
            if v.xfade <= 0:
                v.old = None
        g = v.gain * v.level
        out = self.buf[start:start + k]
        if v.slope != 0.0:
            env = self._env[:k]
            np.multiply(self._ramp[:k], v.slope, out=env)
            env += v.level
            np.clip(env, 0.0, 1.0, out=env)
            env *= v.gain
            np.multiply(src[:k], env, out=src[:k], casting="same_kind")
            out += src[:k]
            v.level = max(0.0, min(1.0, v.level + v.slope * k))
            if v.level <= 0.0:
                self._end(v)
                return
        else:
            if g != 1.0:
                src[:k] *= g
            out += src[:k]
        v.pos = pos
        if k < n:
            self._end(v)
