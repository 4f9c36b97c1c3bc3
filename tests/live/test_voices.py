"""VoicePool, RenderCache and the renderer, on real renders of a random test bundle (no JACK).

A note-on without a velocity has the timbre of velocity 100 (``DEFAULT_VELOCITY``): half the
mf layer (80), half the ff layer (120); ``voice.slot.a`` is the mf layer's render."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from bundles import make_test_bundle

from waeserver.live.cache import Note, RenderCache
from waeserver.live.controls import ControlState
from waeserver.live.notes import LOOP_S, VELOCITIES, layer_velocities, shape_note
from waeserver.live.renderer import Renderer
from waeserver.live.voices import FADING, FREE, GAIN_RAMP_S, PENDING, PLAYING, RELEASED, NotQueued, VoicePool
from waeserver.sound.bundle import load_bundle

RATE = 48000
PERIOD = 256


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.set_num_threads(1)
    return load_bundle(make_test_bundle(tmp_path_factory.mktemp("models") / "voices-test"), "cpu")


@pytest.fixture
def engine(bundle):
    """A filled cache (the three layers of five pitches), its renderer and a pool at 48 kHz."""
    state = ControlState(bundle.styles, bundle.latent_size)
    cache = RenderCache(bundle.pitch_range, velocities=layer_velocities(bundle))
    renderer = Renderer(bundle, state, cache, RATE, seed=0)
    renderer.retarget()
    for p in (60, 62, 64, 65, 67):
        renderer.render_now([p], priority=False)
    pool = VoicePool(RATE, cache, polyphony=3, budget_ms=10.0)
    pool.release = 0.05
    return state, cache, renderer, pool


def play(pool: VoicePool, periods: int, events=()) -> np.ndarray:
    """Run ``periods`` periods; ``events`` are ``(frame, action, args)`` from the first period on."""
    out = np.zeros(periods * PERIOD, np.float32)
    for i in range(periods):
        now = [(f - i * PERIOD, a, args) for f, a, args in events if i * PERIOD <= f < (i + 1) * PERIOD]
        pool.run(out[i * PERIOD:(i + 1) * PERIOD], now)
    return out


def test_render_is_resampled_once_and_faded(engine, bundle):
    _, cache, _, _ = engine
    assert cache.velocities == VELOCITIES and len(cache.notes[60]) == 3   # the test card names none
    assert len({note.loop for note in cache.notes[60]}) == 1             # the layers loop, or not, together
    for note in cache.notes[60]:
        audio = note.wave
        assert audio.dtype == np.float32 and audio.ndim == 1
        assert len(audio) <= bundle.n_samples * RATE // bundle.sample_rate + 1
        assert np.sqrt(np.mean(audio ** 2)) > 1e-4
        if note.loop < 0:
            assert audio[-1] == 0.0               # faded out, so a voice can end on it
        else:                                     # ends where its loop takes over
            assert len(audio) == int(LOOP_S[1] * RATE) and note.loop == int(LOOP_S[0] * RATE)
    assert cache.nbytes() == sum(n.wave.nbytes for p in (60, 62, 64, 65, 67) for n in cache.notes[p])


def _tone(decay_s: float | None, seconds: float = 1.5, hz: float = 220.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.5 * np.sin(2 * np.pi * hz * t) + 0.2 * np.sin(2 * np.pi * hz * (663.0 / 220.0) * t)
    return (wave * (np.exp(-t / decay_s) if decay_s else 1.0)).astype(np.float32)


def test_a_sustained_note_gets_a_seamless_loop_and_a_plucked_one_an_end():
    held = shape_note(_tone(None), RATE)
    start, end = int(LOOP_S[0] * RATE), int(LOOP_S[1] * RATE)
    assert held.loop == start and len(held.wave) == end
    step = np.abs(np.diff(held.wave[start:end])).max()            # the largest step inside the note
    assert abs(float(held.wave[start]) - float(held.wave[-1])) <= step + 1e-6   # going back is no bigger
    plucked = shape_note(_tone(0.1), RATE)
    assert plucked.loop == -1 and plucked.wave[-1] == 0.0
    short = shape_note(_tone(None, seconds=0.5), RATE)             # too short to hold a loop
    assert short.loop == -1 and short.wave[-1] == 0.0
    struck = shape_note(_tone(0.5), RATE)                          # audible, but decaying: no loop
    assert struck.loop == -1
    t = np.arange(len(_tone(None))) / RATE
    swelling = shape_note(_tone(None) * (1.0 + 1.5 * t).astype(np.float32), RATE)   # steady enough
    n = RATE // 10
    rms = lambda x: np.sqrt(np.mean(x.astype(np.float64) ** 2))  # noqa: E731
    level_start, level_end = rms(swelling.wave[start:start + n]), rms(swelling.wave[end - 2 * n:end - n])
    assert swelling.loop == start and abs(level_end / level_start - 1.0) < 0.1   # levelled: no pumping


def test_a_held_note_loops_until_released_without_a_click(engine):
    _, cache, _, pool = engine
    wave = _tone(None)
    note = shape_note(wave, RATE)
    cache.notes[60] = (note,) * 3
    assert pool.publish(60, cache.notes[60]) and cache.fresh[60]
    seconds = 3.0
    out = play(pool, int(seconds * RATE / PERIOD) + 40, [(0, "note_on", (60, 1.0)),
                                                         (int(seconds * RATE), "note_off", (60,))])
    held = out[int(0.1 * RATE):int(seconds * RATE)]
    assert np.sqrt(np.mean(held[-RATE // 2:] ** 2)) > 0.8 * np.sqrt(np.mean(wave[:RATE] ** 2))  # still sounding
    assert np.abs(np.diff(held)).max() <= np.abs(np.diff(wave)).max() * 1.25                 # no click at the wraps
    assert not out[int((seconds + pool.release) * RATE) + PERIOD:].any() and pool.sounding() == 0
    pool.bend(4000)                                               # bent, it wraps as well
    out = play(pool, 200, [(0, "note_on", (60, 1.0))])
    assert np.sqrt(np.mean(out[-RATE // 2:] ** 2)) > 0.1 and pool.sounding() == 1


def test_note_starts_on_its_frame_and_is_silent_after_release(engine):
    _, _, _, pool = engine
    out = play(pool, 80, [(100, "note_on", (60, 1.0)), (4000, "note_off", (60,))])
    assert not out[:100].any()
    assert np.flatnonzero(out)[0] in (100, 101)
    release_end = 4000 + int(0.05 * RATE) + PERIOD
    assert np.abs(out[1000:4000]).max() > 1e-4
    assert not out[release_end:].any()
    assert pool.sounding() == 0
    assert ("n_go", 60) in pool.events and ("n_end", 60) in pool.events


def test_velocity_picks_and_blends_layers_and_gain_scales_them(engine):
    """On a layer's velocity a note plays that layer; between two, both, in proportion; beyond the
    outer ones, the outer one. The gain (the velocity curve's) scales whatever it plays."""
    _, cache, _, _ = engine
    soft, mf, ff = (note.wave for note in cache.notes[60])
    n = 4 * PERIOD
    for velocity, expected in [(40, soft), (1, soft), (120, ff), (127, ff), (60, 0.5 * soft + 0.5 * mf),
                               (110, 0.25 * mf + 0.75 * ff)]:
        pool = VoicePool(RATE, cache, polyphony=3)
        out = play(pool, 4, [(0, "note_on", (60, 0.5, -1, velocity))])
        if velocity in (40, 1, 120, 127):        # one layer: its very samples, scaled
            np.testing.assert_array_equal(out, 0.5 * expected[:n])
        else:
            np.testing.assert_allclose(out, 0.5 * expected[:n], atol=1e-6)
    assert np.abs(soft[:n] - ff[:n]).max() > 10 * 1e-6 / 0.5   # the layers differ, so this tells them apart


def test_sustain_holds_released_notes_until_pedal_up(engine):
    _, _, _, pool = engine
    play(pool, 2, [(0, "sustain", (True,)), (0, "note_on", (60, 1.0)), (300, "note_off", (60,))])
    assert [v.state for v in pool.voices if v.pitch == 60 and v.state != FREE] == [PLAYING]
    out = play(pool, 30)
    assert np.abs(out[-PERIOD:]).max() > 0
    play(pool, 1, [(0, "sustain", (False,))])
    assert [v.state for v in pool.voices if v.state != FREE] == [RELEASED]
    play(pool, 20)
    assert pool.sounding() == 0


def test_stealing_order_released_then_same_pitch_then_oldest(engine):
    _, _, _, pool = engine
    on = lambda p: (200, "note_on", (p, 1.0))  # noqa: E731  (late: the 5 ms fade is still going at the end)
    play(pool, 1, [on(60), on(62), on(64), (210, "note_off", (62,))])
    play(pool, 1, [on(65)])                        # polyphony 3: the released 62 goes first
    states = {v.pitch: v.state for v in pool.voices if v.state != FREE}
    assert states[62] == FADING and states[65] == PLAYING
    play(pool, 2)
    play(pool, 1, [on(60)])                        # all held: the older 60 makes way for the new 60
    sixty = sorted((v.age, v.state) for v in pool.voices if v.pitch == 60 and v.state != FREE)
    assert [s for _, s in sixty] == [FADING, PLAYING]
    play(pool, 2)
    play(pool, 1, [on(67)])                        # no release, no same pitch: the oldest (64)
    assert {v.pitch for v in pool.voices if v.state == FADING} == {64}
    assert sum(v.state in (PLAYING, RELEASED, PENDING) for v in pool.voices) == 3


def test_steal_fades_without_a_click(engine, bundle):
    state, cache, renderer, _ = engine
    steal_at = 20 * PERIOD + 37

    def run(polyphony, events):
        pool = VoicePool(RATE, cache, polyphony=polyphony)
        return play(pool, 40, events)

    old = run(1, [(0, "note_on", (60, 1.0))])
    new = run(1, [(steal_at, "note_on", (64, 1.0))])
    stolen = run(1, [(0, "note_on", (60, 1.0)), (steal_at, "note_on", (64, 1.0))]) - new
    fade = int(0.005 * RATE)
    np.testing.assert_allclose(stolen[:steal_at], old[:steal_at], atol=1e-6)
    assert np.abs(old[steal_at:steal_at + fade]).max() > 1e-4      # the stolen note is loud there
    # a linear fade over 5 ms from the very frame of the steal, then nothing: never a cut
    env = 1.0 - np.arange(1, fade + 1) / fade
    np.testing.assert_allclose(stolen[steal_at:steal_at + fade], old[steal_at:steal_at + fade] * env, atol=1e-6)
    assert not stolen[steal_at + fade:].any()
    own_jump = np.abs(np.diff(old[steal_at - 2000:steal_at + fade])).max()
    assert np.abs(np.diff(stolen[steal_at - 1:steal_at + fade + 2])).max() <= own_jump + np.abs(old).max() / fade + 1e-6


def test_pitch_bend_varispeeds_sounding_voices(engine):
    _, _, _, pool = engine
    pool.bend_range = 2.0
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    voice = next(v for v in pool.voices if v.state == PLAYING)
    play(pool, 1, [(0, "bend", (8191,))])
    before = voice.pos
    play(pool, 10)
    assert voice.pos - before == pytest.approx(10 * PERIOD * 2 ** (2 * 8191 / 8192 / 12), rel=1e-6)
    play(pool, 1, [(0, "bend", (0,))])
    assert pool.ratio == 1.0


def test_panic_and_all_notes_off(engine):
    _, _, _, pool = engine
    play(pool, 1, [(0, "sustain", (True,)), (0, "note_on", (60, 1.0)), (0, "note_on", (62, 1.0))])
    play(pool, 1, [(0, "all_notes_off", ())])
    assert {v.state for v in pool.voices if v.state != FREE} == {RELEASED}
    play(pool, 1, [(0, "note_on", (64, 1.0)), (100, "panic", ())])
    assert {v.state for v in pool.voices if v.state != FREE} == {FADING}
    play(pool, 2)
    assert pool.sounding() == 0


def test_stale_note_plays_stand_in_then_crossfades_to_the_new_render(engine):
    state, cache, renderer, pool = engine
    state.set_style(state.style_names[1], 0.5)
    renderer.retarget()
    assert not cache.fresh[60]
    cache.expected_ms = 50.0                      # a render takes longer than the 10 ms budget
    standin = cache.notes[60][1].wave
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    voice = next(v for v in pool.voices if v.state == PLAYING)
    assert pool.audio(voice) is standin and pool.standins == 1 and pool.misses == 1
    assert 60 in cache.pop_requests()
    renderer.render_now([60])
    play(pool, 1)
    assert pool.audio(voice) is cache.notes[60][1].wave and pool.audio(voice) is not standin
    assert pool.audio(voice, "slot", "b") is cache.notes[60][2].wave
    assert pool.audio(voice, "old") is standin
    play(pool, 3)
    assert pool.audio(voice, "old") is None


def test_stale_note_waits_within_budget_for_a_fast_render(engine):
    state, cache, renderer, pool = engine
    state.set_z([0.5, 0.0, 0.0])
    renderer.retarget()
    cache.expected_ms = 2.0                       # a fast device: worth waiting for
    pool.budget_ms = 10.0                         # but no period starts before the deadline
    play(pool, 1, [(0, "note_on", (64, 1.0))])
    assert pool.standins == 1
    pool.budget_ms = 30.0                         # four periods to wait
    standins = pool.standins
    play(pool, 1, [(0, "note_on", (62, 1.0))])
    voice = next(v for v in pool.voices if v.pitch == 62 and v.state != FREE)
    assert voice.state == PENDING and voice.pos == 0.0
    renderer.render_now(cache.pop_requests())
    play(pool, 1)
    assert voice.state == PLAYING and pool.audio(voice) is cache.notes[62][1].wave
    assert pool.standins == standins
    play(pool, 1, [(0, "note_on", (65, 1.0))])    # nothing arrives: the last render, at the deadline
    late = next(v for v in pool.voices if v.pitch == 65 and v.state != FREE)
    play(pool, 3)
    assert late.state == PENDING
    play(pool, 1)
    assert late.state == PLAYING and pool.standins == standins + 1


def test_a_priority_render_makes_only_the_layers_the_note_blends(engine):
    """After a change, a note at velocity 100 asks for the mf and ff layers only, and plays them once
    both are in; the p layer stays stale until the refill renders the pitch whole again. A note at
    60 (p and mf) does not take a batch that brings mf and ff: it would blend a new layer with an
    older one."""
    state, cache, renderer, pool = engine
    soft = cache.notes[60][0].wave
    state.set_style(state.style_names[1], 0.5)
    renderer.retarget()
    cache.expected_ms = 2.0
    pool.budget_ms = 30.0                          # worth waiting for
    play(pool, 1, [(0, "note_on", (60, 1.0, -1, 100)), (0, "note_on", (62, 1.0, -1, 60))])
    loud, quiet = (next(v for v in pool.voices if v.pitch == p and v.state != FREE) for p in (60, 62))
    assert loud.state == quiet.state == PENDING
    wanted = cache.pop_requests()
    assert wanted == {60: 0b110, 62: 0b011}
    renderer.render_now(wanted)
    play(pool, 1)
    assert cache.fresh[60] == 0b110 and cache.notes[60][0].wave is soft and not cache.whole[60]
    assert loud.state == PLAYING and pool.audio(loud) is cache.notes[60][1].wave
    assert pool.audio(loud, "slot", "b") is cache.notes[60][2].wave
    assert quiet.state == PLAYING and pool.audio(quiet) is cache.notes[62][0].wave
    state.set_style(state.style_names[1], 0.8)
    renderer.retarget()
    play(pool, 1, [(0, "note_on", (64, 1.0, -1, 60))])
    waiting = next(v for v in pool.voices if v.pitch == 64 and v.state != FREE)
    renderer.render_now({64: 0b110})               # mf and ff, but this note blends p and mf
    play(pool, 1)
    assert waiting.state == PENDING
    renderer.render_now({64: 0b001})
    play(pool, 1)
    assert waiting.state == PLAYING and pool.audio(waiting) is cache.notes[64][0].wave
    assert pool.audio(waiting, "slot", "b") is cache.notes[64][1].wave
    assert 60 in cache.stale()
    renderer.render_now([60], priority=False)
    assert cache.is_fresh(60) and cache.whole[60] and cache.notes[60][0].wave is not soft


def test_small_fader_jitter_keeps_the_cache_fresh(engine):
    state, cache, renderer, _ = engine
    fresh = cache.fresh.copy()
    state.set_style(state.style_names[0], 0.995)
    renderer.retarget()
    np.testing.assert_array_equal(cache.fresh, fresh)
    state.set_style(state.style_names[0], 0.9)
    renderer.retarget()
    assert not cache.fresh.any()


def test_per_note_mode_uses_each_draw_once(engine):
    state, cache, renderer, pool = engine
    state.set_z_mode("per-note")
    renderer.retarget()
    renderer.render_now([60], priority=False)
    first = cache.notes[60][1].wave
    hits = pool.hits
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    voice = next(v for v in pool.voices if v.state == PLAYING)
    assert pool.hits == hits + 1 and pool.audio(voice) is first and not cache.fresh[60]
    renderer.render_now(cache.pop_requests(), priority=False)
    assert cache.fresh[60] and not np.array_equal(cache.notes[60][1].wave[:4096], first[:4096])


def test_refill_renders_recently_played_pitches_first(engine):
    state, cache, renderer, pool = engine
    play(pool, 1, [(0, "note_on", (65, 1.0)), (1, "note_on", (62, 1.0))])
    state.set_style(state.style_names[2], 1.0)
    renderer.retarget()
    assert cache.stale()[:2] == [62, 65]
    renderer.pitch_ms = renderer.slice_ms         # a refill pitch takes the whole budget: one at a time
    assert renderer.refill_batch() == 1
    assert renderer.step() and cache.fresh[62] and not cache.fresh[65]
    assert renderer.step() and cache.fresh[65]
    renderer.pitch_ms = renderer.slice_ms / 100   # a fast device: full batches
    assert renderer.refill_batch() == renderer.batch


def test_a_chord_on_many_frames_mixes_each_voice_once_per_event(engine):
    """Notes of one period start on their own frames, and the period costs a mix per voice plus one
    per event touching it (not a mix of the whole pool per event)."""
    _, _, _, pool = engine
    pool.sustain(True)
    play(pool, 1, [(0, "note_on", (60, 1.0)), (0, "note_on", (62, 1.0))])
    mixes = pool.stats.mixes
    out = play(pool, 1, [(40, "note_off", (60,)), (90, "note_off", (62,)), (150, "note_on", (64, 1.0)),
                         (151, "bend", (0,)), (152, "bend", (0,))])
    # 60 and 62 up to their note-offs and to the end (sustained: the note-off changes nothing
    # audible), 64 from frame 150 once; the centred bends change nothing
    assert pool.stats.mixes - mixes == 5
    assert sum(1 for v in pool.voices if v.state == PLAYING) == 3
    new = VoicePool(RATE, pool.cache, polyphony=3)
    alone = play(new, 1, [(150, "note_on", (64, 1.0))])
    assert not alone[:150].any() and alone[150:].any()
    reference = np.zeros(PERIOD, np.float32)
    for p in (60, 62):                            # velocity 100: half mf, half ff
        reference += sum(0.5 * note.wave[PERIOD:2 * PERIOD] for note in pool.cache.notes[p][1:])
    np.testing.assert_allclose(out, np.clip(reference + alone, -1, 1), atol=1e-6)


def test_bend_and_pedal_take_effect_on_their_frame(engine):
    _, _, _, pool = engine
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    voice = next(v for v in pool.voices if v.state == PLAYING)
    before = voice.pos
    play(pool, 1, [(100, "bend", (8191,))])
    assert voice.pos - before == pytest.approx(100 + (PERIOD - 100) * 2 ** (2 * 8191 / 8192 / 12), rel=1e-6)
    play(pool, 1, [(0, "bend", (0,)), (0, "sustain", (True,)), (10, "note_off", (60,))])
    play(pool, 1, [(200, "sustain", (False,))])
    assert voice.state == RELEASED
    assert voice.level == pytest.approx(1.0 - (PERIOD - 200) / (pool.release * RATE))  # fading from frame 200


def test_renders_are_let_go_once_no_voice_or_pitch_uses_them(engine):
    state, cache, renderer, pool = engine
    held = len(pool._notes)                        # one render per cached pitch and layer
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    voice = next(v for v in pool.voices if v.state == PLAYING)
    first = pool.audio(voice)
    for _ in range(3):                             # newer renders of 60 replace each other in the table
        renderer.render_now([60], priority=False)
    play(pool, 1)
    assert len(pool._notes) == held + 2 and pool.audio(voice) is first   # the voice keeps its two layers
    play(pool, 1, [(0, "note_off", (60,))])
    play(pool, int(pool.release * RATE / PERIOD) + 2)
    assert pool.sounding() == 0 and len(pool._notes) == held
    assert (pool.current[[60, 62, 64, 65, 67], :3] >= 0).all() and (pool.current[:, 3:] == -1).all()


def test_periods_longer_than_the_buffers_are_mixed_in_pieces(engine):
    _, cache, _, _ = engine
    events = [(10, "note_on", (60, 1.0)), (300, "note_on", (64, 0.5)), (700, "note_off", (60,))]
    whole = np.zeros(1024, np.float32)
    VoicePool(RATE, cache, polyphony=3).run(whole, events)
    pieces = np.zeros(1024, np.float32)
    VoicePool(RATE, cache, polyphony=3, max_period=100).run(pieces, events)
    assert whole[10:].any() and not whole[:10].any()
    np.testing.assert_array_equal(pieces, whole)


def test_a_full_queue_refuses_actions_and_keeps_its_render_slots(engine):
    """Nothing drains the queue (no periods run, as while JACK is away): once it is full, actions
    raise NotQueued and a render that could not be published keeps no slot. A period drains it."""
    _, cache, _, pool = engine
    play(pool, 1)                                  # the cache's renders published
    taken = 0
    with pytest.raises(NotQueued, match="full"):
        while taken < 100_000:
            pool.note_off(60)
            taken += 1
    assert taken == len(pool._queued_buf) and pool.lost == 1
    slots, held = len(pool._free), len(pool._notes)
    assert pool.publish(62, cache.notes[62]) is False
    assert (len(pool._free), len(pool._notes)) == (slots, held)
    for action in (lambda: pool.sync("token"), pool.clear):
        with pytest.raises(NotQueued):
            action()
    play(pool, 1)
    pool.note_on(60, 1.0)
    assert pool.queued() == [("note_on", 60)] and pool.lost == 2


def test_refused_note_ons_do_not_wait_for_the_audio(engine):
    """While ``refusing`` says why (the daemon sets it while JACK is away), note-ons from OSC and
    from MIDI bytes are refused instead of sounding when the audio comes back; the rest is kept."""
    _, _, _, pool = engine
    pool.refusing = "no audio"
    for action in (lambda: pool.note_on(60, 1.0), lambda: pool.midi(bytes([0x90, 60, 100]))):
        with pytest.raises(NotQueued, match="no audio"):
            action()
    pool.note_off(60)
    pool.midi(bytes([0x90, 62, 0]))               # a note-off by velocity 0
    pool.sustain(True)
    assert [a for a, _ in pool.queued()] == ["note_off", "midi", "sustain"]
    pool.refusing = ""
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    assert pool.sounding() == 1


def test_a_loud_chord_is_limited_without_clipping_and_a_single_note_passes_unchanged():
    """32 sustained tones of 0.7 peak at a third of full level sum to several times full scale: the master
    limiter keeps the mix under 1 with no clipped runs, by a gain alone (the same mix with the
    limiter out of reach, scaled back, is the reference). One such tone is bit for bit the render,
    also once the chord has been released and the limiter has let go."""
    pitches = range(40, 72)
    notes = {p: shape_note(_tone(None, hz=440.0 * 2 ** ((p - 69) / 12)), RATE) for p in pitches}

    def chord(master_gain: float) -> tuple[VoicePool, np.ndarray]:
        pool = VoicePool(RATE, polyphony=32)
        pool.gain = master_gain
        pool.release = 0.05
        play(pool, 1)                             # the gain's ramp from 1, in silence
        for p, note in notes.items():
            assert pool.publish(p, note)
            pool.fresh[p] = True
        out = play(pool, int(0.6 * RATE / PERIOD), [(0, "note_on", (p, 0.3)) for p in pitches])
        return pool, out

    pool, out = chord(1.0)
    _, quiet = chord(1 / 64)                      # a power of two: scaling back is exact
    raw = quiet * 64                              # the un-limited mix
    assert np.abs(raw).max() > 3.0 and np.abs(quiet).max() < 0.8
    over = np.abs(raw) >= 1.0
    assert (over[1:] & over[:-1]).sum() > 100     # a hard clip would have flattened runs of samples
    assert np.abs(out).max() < 1.0 and np.abs(out).max() > 0.9
    clipped = np.abs(out) >= 0.999
    assert not (clipped[1:] & clipped[:-1]).any()
    loud = np.abs(raw) > 1e-3
    gain = out[loud] / raw[loud]                  # a gain, not a waveshaper: same sign, never louder
    assert gain.min() > 0.0 and gain.max() <= 1.0 + 1e-6 and pool.stats.limited > 0

    single = notes[60].wave
    assert 0.6 < np.abs(single).max() < 0.8       # loud, but below the knee
    one = VoicePool(RATE, polyphony=32)
    assert one.publish(60, notes[60])
    one.fresh[60] = True
    alone = play(one, 20, [(0, "note_on", (60, 1.0))])
    assert np.array_equal(alone, single[:len(alone)]) and one.stats.limited == 0

    play(pool, 1, [(0, "all_notes_off", ())])
    play(pool, int(1.5 * RATE / PERIOD))          # released, and the limiter's gain back at 1
    limited = pool.stats.limited
    after = play(pool, 20, [(0, "note_on", (60, 1.0))])
    assert np.array_equal(after, single[:len(after)]) and pool.stats.limited == limited


def test_actions_posted_for_a_frame_are_held_until_it(engine):
    """Actions posted inside ``pool.at(frame)`` start on that frame, however many periods ahead and
    in whatever order they were posted; one whose frame has passed applies at once, counted."""
    _, _, _, pool = engine
    start = pool.stats.frame
    with pool.at(start + 3 * PERIOD + 77):
        pool.note_on(62, 1.0)
    with pool.at(start + PERIOD + 5):
        pool.note_on(60, 1.0)
        pool.note_off(60)          # the same frame, after it: the note starts and is released there
    out = play(pool, 5)
    assert pool.held() == 0
    onsets = np.flatnonzero(np.abs(np.diff(np.concatenate([[0.0], out]))) > 0)
    assert onsets[0] == PERIOD + 5
    assert not out[:PERIOD + 5].any()
    voice = next(v for v in pool.voices if v.pitch == 62 and v.state != FREE)
    assert voice.on_frame == start + 3 * PERIOD + 77 and voice.state == PLAYING
    assert next(v for v in pool.voices if v.pitch == 60).state in (RELEASED, FREE)
    late = pool.stats.timed_late
    with pool.at(start):           # long past
        pool.note_on(64, 1.0)
    play(pool, 1)
    assert pool.stats.timed_late == late + 1
    assert next(v for v in pool.voices if v.pitch == 64).on_frame == start + 5 * PERIOD


def test_a_take_copies_the_input_from_the_next_period_until_full_then_stops():
    """The take of live sampling (``voices_capture``, which JACK's callback runs on in_1 after each
    period): armed, it starts at the period after, takes exactly the frames asked for, and leaves
    a later input alone; a new take replaces it."""
    pool = VoicePool(RATE)
    out = np.zeros(PERIOD, np.float32)
    take = np.full(600, -1.0, np.float32)
    pool.capture(np.ones(PERIOD, np.float32))   # nothing armed: nothing taken
    pool.record(take, 3)
    assert pool.take()[:2] == (0, 0)             # not before the next period
    pool.run(out)
    first = pool.stats.frame - PERIOD
    for i in range(4):
        pool.capture(np.arange(PERIOD, dtype=np.float32) + i * PERIOD)
        if i == 0:
            assert pool.take()[:3] == (3, PERIOD, first)
    take_id, got, _, start_ns, done_ns = pool.take()
    assert (take_id, got) == (3, 600) and 0 < start_ns <= done_ns
    np.testing.assert_array_equal(take, np.arange(600))
    again = np.zeros(100, np.float32)
    pool.record(again, 4)
    pool.run(out)
    pool.capture(np.full(PERIOD, 2.0, np.float32))
    assert pool.take()[:2] == (4, 100) and (again == 2.0).all() and take[-1] == 599
    with pytest.raises(ValueError):
        pool.record(np.zeros(10), 5)             # float64


def steady_pool(pitches=(60, 62, 64), level: float = 0.5) -> VoicePool:
    """A pool whose pitches sound ``level`` for as long as they are held (a looped constant
    render, fresh), so that a level in the output is the gains it went through."""
    pool = VoicePool(RATE, polyphony=4)
    for p in pitches:
        assert pool.publish(p, Note(np.full(PERIOD, level, np.float32), 0))
        pool.fresh[p] = 1
    return pool


def test_a_timed_gain_change_ramps_from_its_frame():
    """A master gain posted for a frame scales the mix from that very frame, ramping to its value
    over GAIN_RAMP_S (48 frames at 48 kHz): every frame before is at the old gain, every frame from
    the ramp's end at the new one; an untimed change ramps from the next period's first frame."""
    pool = steady_pool()
    pool.note_on(60, 1.0)
    start = pool.stats.frame
    change, ramp = PERIOD + 100, round(GAIN_RAMP_S * RATE)
    with pool.at(start + change):
        pool.gain = 0.5
    assert pool.gain == 0.5 and pool.held() == 0   # read back at once; held from the next period
    out = play(pool, 3)
    assert (out[:change] == 0.5).all() and (out[change + ramp:] == 0.25).all()
    steps = np.diff(out[change - 1:change + ramp])
    assert (steps < 0).all() and np.abs(steps).max() < 0.25 / ramp * 1.01   # a smooth ramp, no jump
    pool.gain = 1.0                                  # untimed
    out = play(pool, 1)
    assert out[0] > 0.25 and out[ramp - 1] == pytest.approx(0.5) and (out[ramp:] == 0.5).all()


def test_a_timed_release_applies_to_voices_released_from_its_frame():
    """A release posted for a frame: a voice released before it (by a note-off, or by its hold
    running out, even in the same period) fades over the old length, one released after over the
    new."""
    pool = steady_pool()
    pool.release = 0.05
    start = pool.stats.frame
    play(pool, 1, [(0, "note_on", (60, 1.0)), (0, "note_on", (62, 1.0, PERIOD + 50))])
    pool.note_on(64, 1.0)
    with pool.at(start + PERIOD + 120):
        pool.release = 0.2
    play(pool, 2, [(10, "note_off", (60,)), (200, "note_off", (64,))])   # the period of the change
    slopes = {v.pitch: v.slope for v in pool.voices if v.state == RELEASED}
    assert slopes[60] == pytest.approx(-1 / (0.05 * RATE)) and slopes[62] == pytest.approx(-1 / (0.05 * RATE))
    assert slopes[64] == pytest.approx(-1 / (0.2 * RATE))


def test_a_timed_bend_range_applies_to_bends_from_its_frame():
    """A bend range posted for a frame: a bend before it bends over the old range, one after over
    the new; the bend in force does not change with the range alone."""
    pool = steady_pool()
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    voice = next(v for v in pool.voices if v.state == PLAYING)
    start, before = pool.stats.frame, voice.pos
    with pool.at(start + 100):
        pool.bend(8191)
    with pool.at(start + 150):
        pool.bend_range = 12.0
    with pool.at(start + 200):
        pool.bend(4096)
    play(pool, 1)
    old = 2 ** (2 * 8191 / 8192 / 12)
    assert voice.pos - before == pytest.approx(100 + 100 * old + (PERIOD - 200) * 2 ** 0.5, rel=1e-9)
    assert pool.bend_range == 12.0 and pool.ratio == pytest.approx(2 ** 0.5)


def test_a_timed_timbre_change_keeps_the_old_renders_for_the_notes_before_it(engine):
    """A style change posted for a frame retargets the cache at once (the renderer starts on it),
    but its renders are played only by notes from the frame on: a note just before plays the old
    render, as fresh; a note on the frame the new one; once the frame has passed and no voice
    plays it, the old render is let go."""
    state, cache, renderer, pool = engine
    play(pool, 1)                                  # the cache's renders in the pool
    held, old = len(pool._notes), cache.notes[60]
    change = pool.stats.frame + 2 * PERIOD + 30
    with pool.at(change):
        state.set_style("flute", 1.0)
        renderer.retarget()                        # as the instrument does on every change
    assert not cache.fresh[60]                     # stale for the new target: the renderer's to do
    renderer.render_now([60], priority=False)
    assert cache.notes[60] is not old and cache.fresh[60]
    with pool.at(change - 10):
        pool.note_on(60, 1.0)
    with pool.at(change):
        pool.note_on(60, 1.0)
    hits = pool.hits
    play(pool, 3)
    first, second = sorted((v for v in pool.voices if v.state == PLAYING), key=lambda v: v.on_frame)
    assert pool.hits - hits == 2 and pool.standins == 0
    assert pool.audio(first) is old[1].wave and pool.audio(second) is cache.notes[60][1].wave
    assert first.gen < second.gen == pool.generation
    pool.panic()
    play(pool, 4)
    assert pool.sounding() == 0 and len(pool._notes) == held   # the old renders of 60 let go


def test_a_stand_in_before_a_timed_timbre_change_is_not_crossfaded_to_its_renders(engine):
    """A note playing a stand-in (its render was stale) crossfades to the render it waits for, but
    not to one made for a timbre change tagged after it: that is the change's timbre."""
    state, cache, renderer, pool = engine
    state.set_z([0.5, 0.0, 0.0])
    renderer.retarget()                            # untimed: from the next period
    pool.budget_ms = 0.0                           # a stale note plays its old render at once
    play(pool, 1, [(0, "note_on", (60, 1.0))])
    voice = next(v for v in pool.voices if v.state == PLAYING)
    standin = pool.audio(voice)
    assert voice.waiting and pool.standins == 1
    with pool.at(pool.stats.frame + 2 * PERIOD):
        state.set_style("flute", 1.0)
        renderer.retarget()
    renderer.render_now([60], priority=False)      # for the change, which the voice started before
    play(pool, 3)
    assert voice.waiting and voice.xfade == 0 and pool.audio(voice) is standin and voice.gen < pool.generation
