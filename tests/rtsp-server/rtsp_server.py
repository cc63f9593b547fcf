#!/usr/bin/python3
"""The integration tests' RTSP camera: GStreamer's RTSP server on loopback.

    rtsp_server.py --port P [--auth USER:PASS] [--auth-method digest|basic|both] NAME=SOURCE...

SOURCE is `test[:WxH[@FPS]]`, a live pattern with a moving ball encoded by
x264 (baseline, one keyframe a second), or an .mp4 file with H.264, served
as it is and paced in real time. Every path is shared by its clients, like a
camera. Prints `ready` on stdout once it listens, then `clients N` whenever
the number of connected RTSP clients changes, so a test can see a client
that leaks sessions.

The tests make the faults themselves: SIGKILL is a camera that went away
(connections refused), SIGSTOP a hung one (connections open, no data), and
SIGCONT brings it back. SIGTERM and SIGINT stop it cleanly.
"""

import argparse
import os
import re
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

ROLE = "camera-user"


def pipeline_for(source):
    """The launch line of one path: a payloader named pay0 inside a bin."""
    m = re.fullmatch(r"test(?::(\d+)x(\d+)(?:@(\d+))?)?", source)
    if m:
        width, height, fps = int(m[1] or 640), int(m[2] or 480), int(m[3] or 15)
        return (
            f"( videotestsrc is-live=true pattern=ball "
            f"! video/x-raw,width={width},height={height},framerate={fps}/1 "
            f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bframes=0 "
            f"! video/x-h264,profile=constrained-baseline "
            f"! rtph264pay name=pay0 pt=96 config-interval=-1 )"
        )
    if not os.path.isfile(source):
        raise ValueError(f"{source}: not `test[:WxH[@FPS]]` and not a file")
    if not source.endswith(".mp4"):
        raise ValueError(f"{source}: only .mp4 files are served")
    location = source.replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{location}" ! qtdemux ! h264parse '
        f"! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )


def authenticate(server, factories, credentials, method):
    user, _, password = credentials.partition(":")
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
    methods = 0
    if method in ("basic", "both"):
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
        methods |= GstRtsp.RTSPAuthMethod.BASIC
    if method in ("digest", "both"):
        auth.add_digest(user, password, token)
        methods |= GstRtsp.RTSPAuthMethod.DIGEST
    auth.set_supported_methods(methods)
    server.set_auth(auth)
    role = Gst.Structure.new_from_string(
        f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
    )
    for factory in factories:
        factory.add_role_from_structure(role)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--auth", metavar="USER:PASS")
    parser.add_argument("--auth-method", choices=("digest", "basic", "both"), default="digest")
    parser.add_argument("paths", nargs="+", metavar="NAME=SOURCE")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    factories = []
    for spec in args.paths:
        name, sep, source = spec.partition("=")
        if not sep or not name:
            parser.error(f"{spec}: expected NAME=SOURCE")
        try:
            launch = pipeline_for(source)
        except ValueError as e:
            print(f"rtsp-server: {e}", file=sys.stderr)
            return 2
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(True)
        mounts.add_factory(f"/{name}", factory)
        factories.append(factory)
    if args.auth:
        authenticate(server, factories, args.auth, args.auth_method)

    clients = set()

    def on_client(_server, client):
        clients.add(client)
        print(f"clients {len(clients)}", flush=True)

        def on_closed(closed):
            clients.discard(closed)
            print(f"clients {len(clients)}", flush=True)

        client.connect("closed", on_closed)

    server.connect("client-connected", on_client)

    if server.attach(None) == 0:
        print(f"rtsp-server: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 2

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, sig, loop.quit)
    print(f"pid {os.getpid()}", flush=True)
    print("ready", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
