#!/usr/bin/python3
"""A loopback RTSP server for nvr's tests: GStreamer's gst-rtsp-server serving an .mp4's H.264
video track as a camera would, looping it forever.

Run with the system Python (Debian's python3-gi and gir1.2-gst-rtsp-server-1.0, plus
gstreamer1.0-plugins-{base,good,bad}):

    /usr/bin/python3 tests/rtsp/serve.py --mp4 clip.mp4 [--then other.mp4 ...] \
        [--port 8554] [--path /clip] [--user U --password P [--auth-method digest|basic]]

It listens on 127.0.0.1 only (`--port 0`, the default, takes any free port), prints
`READY rtsp://127.0.0.1:PORT/PATH` on stdout once listening, and exits with status 0 on
SIGTERM or SIGINT. Errors go to stderr with a non-zero exit status.

How the loop keeps timestamps increasing: at start each .mp4 is demuxed once
(`filesrc ! qtdemux ! h264parse config-interval=-1 ! appsink`) into memory, as byte-stream
access units with their PTS, DTS and duration, SPS/PPS in-band before every keyframe. Each
client's media is then

    appsrc name=src format=time ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1

and appsrc is fed those access units in a cycle, each pass shifted so that it starts where the
previous one ended (pass `n` of a single clip: by `n` times the clip's duration), so PTS/DTS
(hence RTP timestamps) only ever increase and each pass starts on the clip's first keyframe.
Demuxing once and timestamping ourselves avoids seeking inside the pipeline gst-rtsp-server
manages (it watches that pipeline's bus itself, and an EOS would end the clients' streams),
and needs no decoding or re-encoding. The RTP sinks sync to the clock, so the stream is paced
in real time. `config-interval=-1` repeats SPS/PPS before every keyframe, as cameras do, so a
client can start on any keyframe.

With `--then FILE.mp4` (repeatable), the passes cycle through `--mp4` and each `--then` clip in
turn: `--mp4`, then the first `--then`, ..., then `--mp4` again. A clip with other video
parameters (e.g. another resolution) thus changes the stream's parameters mid-session on a
keyframe, as a camera whose settings are changed does: the new SPS/PPS reach the client only
in-band (the SDP keeps the first clip's `sprop-parameter-sets`), in the keyframe's access unit
and repeated by the payloader. Each access unit is pushed as a sample carrying its clip's caps,
so at a switch appsrc sends downstream a caps event, in order with the buffers, and h264parse
and the payloader renegotiate to the new width and height. The clips should share a frame
rate for the pacing to stay regular, but nothing requires it.

With `--user`/`--password`, the mount requires those credentials, by Digest authentication
(`--auth-method digest`, the default, as most cameras) or Basic (`--auth-method basic`); a
request without them, or with wrong ones, gets 401 Unauthorized. (One method at a time: the C
API takes a bit mask, but PyGObject only passes single values of the enum.)

Each client gets its own pipeline (the media is not shared), so each starts at frame 0 of
`--mp4`.
"""

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


class Clip:
    """One .mp4's H.264 track, demuxed: `caps` (byte-stream, access-unit aligned), `units` as
    `(data, pts, dts, duration, is_delta)`, and the span of its presentation times, from
    `first` (the earliest PTS) for `duration` (ns)."""

    def __init__(self, caps, units):
        self.caps = caps
        self.units = units
        self.first = min(u[1] for u in units)
        self.duration = max(u[1] + u[3] for u in units) - self.first


def load_clip(mp4):
    """Demuxes the .mp4's first H.264 track into a `Clip` of byte-stream, access-unit-aligned
    buffers with SPS/PPS in-band before every keyframe."""
    pipeline = Gst.parse_launch(
        "filesrc name=file ! qtdemux ! h264parse config-interval=-1 "
        "! video/x-h264,stream-format=byte-stream,alignment=au "
        "! appsink name=sink sync=false"
    )
    pipeline.get_by_name("file").set_property("location", mp4)
    sink = pipeline.get_by_name("sink")
    bus = pipeline.get_bus()

    def fail_if_error():
        error = bus.pop_filtered(Gst.MessageType.ERROR)
        if error is not None:
            pipeline.set_state(Gst.State.NULL)
            err, debug = error.parse_error()
            raise RuntimeError(f"demuxing {mp4}: {err.message} ({debug})")

    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        fail_if_error()
        raise RuntimeError(f"demuxing {mp4}: the pipeline does not start")
    units = []
    caps = None
    while True:
        sample = sink.emit("try-pull-sample", Gst.SECOND)
        if sample is None:
            # No sample within a second: the end, an error (e.g. no such file), or a slow
            # machine.
            fail_if_error()
            if sink.get_property("eos"):
                break
            continue
        caps = sample.get_caps()
        buf = sample.get_buffer()
        ok, info = buf.map(Gst.MapFlags.READ)
        if not ok:
            raise RuntimeError("cannot map a demuxed buffer")
        data = bytes(info.data)
        buf.unmap(info)
        units.append(
            (
                data,
                buf.pts,
                buf.dts if buf.dts != Gst.CLOCK_TIME_NONE else buf.pts,
                buf.duration,
                buf.has_flags(Gst.BufferFlags.DELTA_UNIT),
            )
        )
    fail_if_error()
    pipeline.set_state(Gst.State.NULL)
    if not units or caps is None:
        raise RuntimeError(f"{mp4} has no H.264 video track")
    for _, pts, _, duration, _ in units:
        if pts == Gst.CLOCK_TIME_NONE or duration == Gst.CLOCK_TIME_NONE:
            raise RuntimeError(f"{mp4}: a frame has no PTS or duration")
    if units[0][4]:
        raise RuntimeError(f"{mp4} does not start on a keyframe")
    return Clip(caps, units)


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """Builds, for each client, a pipeline that loops the demuxed clips' access units forever,
    one clip after the other."""

    def __init__(self, clips):
        super().__init__()
        self.clips = clips
        self.set_launch(
            "( appsrc name=src format=time "
            "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
        self.set_shared(False)
        self.connect("media-configure", self.on_media_configure)

    def on_media_configure(self, _factory, media):
        src = media.get_element().get_by_name("src")
        # The caps the media prerolls with, hence the SDP's: the first clip's.
        src.set_property("caps", self.clips[0].caps)
        # Where the client is: pass number, unit index in it, and the shift (ns) of the pass's
        # timestamps.
        state = {"pass": 0, "unit": 0, "shift": 0}
        src.connect("need-data", self.on_need_data, state)

    def on_need_data(self, src, _length, state):
        """Pushes the next access unit, shifted so that each pass starts where the previous
        ended, with its clip's caps (appsrc sends a caps event when they change)."""
        clip = self.clips[state["pass"] % len(self.clips)]
        data, pts, dts, duration, is_delta = clip.units[state["unit"]]
        shift = state["shift"]
        state["unit"] += 1
        if state["unit"] == len(clip.units):
            following = self.clips[(state["pass"] + 1) % len(self.clips)]
            state["shift"] = shift + clip.first + clip.duration - following.first
            state["pass"] += 1
            state["unit"] = 0
        buf = Gst.Buffer.new_wrapped(data)
        buf.pts = pts + shift
        buf.dts = dts + shift
        buf.duration = duration
        if is_delta:
            buf.set_flags(Gst.BufferFlags.DELTA_UNIT)
        src.emit("push-sample", Gst.Sample.new(buf, clip.caps, None, None))


def require_credentials(server, factory, user, password, method):
    """Makes the mount require `user`/`password` with `method` ("basic" or "digest")."""
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
    if method == "basic":
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    else:
        auth.add_digest(user, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    server.set_auth(auth)
    factory.add_role_from_structure(
        Gst.Structure.new_from_string(
            "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
        )
    )


def main():
    parser = argparse.ArgumentParser(
        description="Serve an .mp4's H.264 track (or several in turn) over RTSP on 127.0.0.1, "
        "looping forever."
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 takes a free one")
    parser.add_argument("--mp4", required=True, help="the .mp4 to serve (H.264 video)")
    parser.add_argument(
        "--then",
        action="append",
        default=[],
        metavar="FILE.mp4",
        help="another .mp4 to serve after --mp4, in turn with it (repeatable)",
    )
    parser.add_argument("--path", default="/clip", help="mount point, e.g. /clip")
    parser.add_argument("--user", help="require this user name (with --password)")
    parser.add_argument("--password", help="the password for --user")
    parser.add_argument(
        "--auth-method",
        choices=["digest", "basic"],
        default="digest",
        help="how --user/--password are checked (PyGObject cannot offer both at once)",
    )
    args = parser.parse_args()
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    if not args.path.startswith("/"):
        parser.error("--path must start with /")

    Gst.init(None)
    try:
        clips = [load_clip(mp4) for mp4 in [args.mp4, *args.then]]
    except (RuntimeError, GLib.Error) as e:
        print(f"serve.py: {e}", file=sys.stderr)
        return 1

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    # RTP/RTCP over UDP from 127.0.0.1 too (by default the server binds those to every
    # address). Ports taken by others are skipped: the server tries the next pair.
    pool = GstRtspServer.RTSPAddressPool()
    if not pool.add_range("127.0.0.1", "127.0.0.1", 20000, 29999, 0):
        print("serve.py: cannot set up the UDP port range", file=sys.stderr)
        return 1
    factory = LoopingFactory(clips)
    factory.set_address_pool(pool)
    if args.user is not None:
        require_credentials(server, factory, args.user, args.password, args.auth_method)
    server.get_mount_points().add_factory(args.path, factory)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    try:
        # What `server.attach` does, but with the error's reason (attach only returns 0).
        server.create_source(None).attach(None)
    except GLib.Error as e:
        print(f"serve.py: cannot listen on 127.0.0.1:{args.port}: {e.message}", file=sys.stderr)
        return 1
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
