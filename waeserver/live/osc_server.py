"""OSC over UDP for the address table (waeserver.live.osc.Commands).

:class:`OscServer` receives datagrams on its own thread (a 4 MB receive buffer to ride out
floods), drops senders outside the allow-list, hands bundles to a
:class:`~waeserver.live.timing.Scheduler` (held for their time tags), dispatches, and sends replies and
events (``/wae/n_go``, ``/wae/n_end``, ``/wae/state``, ``/wae/synced``, ``/wae/late``) from the
same socket.
"""

from __future__ import annotations

import logging
import socket
import threading

from pythonosc.osc_packet import OscPacket, ParseError

from waeserver.live.osc import Address, Commands, encode
from waeserver.live.timing import BundleError, Scheduler, parse_bundle

log = logging.getLogger(__name__)

RCVBUF = 4 * 1024 * 1024


class OscServer:
    """UDP OSC on ``host:port`` for ``commands``; ``allow`` lists the client IPs let in (empty: all)."""

    def __init__(self, commands: Commands, host: str = "127.0.0.1", port: int = 57130, allow: list[str] = ()):
        self.commands = commands
        self.allow = set(allow)
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        try:
            self.sock.bind((host, port))
        except OSError as exc:
            self.sock.close()
            raise OSError(f"cannot listen for OSC on {host}:{port}: {exc.strerror or exc}") from None
        self.sock.settimeout(0.05)   # how soon stop() is noticed
        self.address = self.sock.getsockname()[:2]
        self.received = self.refused = self.dropped = 0
        commands.send = self.send
        self.scheduler = Scheduler(commands.inst.pool, self._dispatch, commands.report_late)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="waeserver-osc", daemon=True)

    def start(self) -> None:
        self.scheduler.start()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.scheduler.stop()
        self.sock.close()

    def send(self, dest: Address, address: str, args: list) -> None:
        try:
            self.sock.sendto(encode(address, args), dest)
        except OSError as exc:  # an unreachable subscriber must not stop the server
            log.debug("OSC send to %s failed: %s", dest, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            sender = sender[:2]
            if self.allow and sender[0] not in self.allow:
                self.dropped += 1
                continue
            self.received += 1
            try:
                if data.startswith(b"#bundle"):   # held for its time tag (waeserver.live.timing)
                    self.scheduler.submit(*parse_bundle(data), sender)
                    continue
                messages = [m.message for m in OscPacket(data).messages]
            except BundleError as exc:
                self.refused += 1
                self.send(self.commands.reply_to(sender), "/fail", ["#bundle", str(exc)])
                continue
            except (ParseError, ValueError, IndexError, OverflowError) as exc:
                self.refused += 1
                self.send(self.commands.reply_to(sender), "/fail", ["", f"malformed OSC packet ({exc})"[:200]])
                continue
            self._dispatch(messages, sender)

    def _dispatch(self, messages: list, sender: Address) -> None:
        """Run ``messages`` in order and send their replies (the OSC and the scheduler's threads)."""
        for msg in messages:
            try:
                replies = self.commands.apply(msg.address, msg.params, sender)
            except Exception:  # a bug in one handler must not stop the server
                log.exception("OSC %s failed", msg.address)
                replies = [("/fail", [msg.address, "internal error"])]
            dest = self.commands.reply_to(sender)
            for address, args in replies:
                if address == "/fail":
                    self.refused += 1
                self.send(dest, address, args)
