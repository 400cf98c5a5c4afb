"""The raw floor: one JBD request round trip over D-Bus against the mock BlueZ, bare client.

    DBUS_SYSTEM_BUS_ADDRESS=... bench/.venv/bin/python bench/raw_roundtrip.py --mac MAC \
        [--jbd MAC ... --powermon MAC] [-n 200]

With dbus-fast's low-level message API (no bleak, no proxies): Device1.Connect, wait for
ServicesResolved, find the ff01/ff02 characteristics in GetManagedObjects, StartNotify on ff01,
then time N x (WriteValue of the 0x03 read request on ff02 -> the LAST PropertiesChanged Value
chunk of the reply on ff01, i.e. until the reassembled frame is complete). Also times N x the
pair 0x03 then 0x04 (what one JBD poll of blebatt asks, sequentially) and, with --jbd/--powermon,
N x one full tick: every device polled concurrently (JBD: 0x03 then 0x04; PowerMon: one
ReadValue), until the last reply is in. Disconnects at the end. Prints one JSON object on stdout
(times in ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

BLUEZ = "org.bluez"
NOTIFY_UUID = "0000ff01-0000-1000-8000-00805f9b34fb"
WRITE_UUID = "0000ff02-0000-1000-8000-00805f9b34fb"
POWERMON_UUIDS = ("7a95ce01-0ea8-1bcc-71a2-fc7539b81c9c", "ec7c0001-2c7b-1539-172f-29d041beab3e")


def jbd_request(reg: int) -> bytes:
    chk = (0x10000 - (reg + 0)) & 0xFFFF
    return bytes([0xDD, 0xA5, reg, 0x00, chk >> 8, chk & 0xFF, 0x77])


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


async def call(bus: MessageBus, path: str, iface: str, member: str, sig: str = "", body=None):
    reply = await bus.call(
        Message(
            destination=BLUEZ,
            path=path,
            interface=iface,
            member=member,
            signature=sig,
            body=body or [],
        )
    )
    if reply.message_type == MessageType.ERROR:
        raise RuntimeError(f"{iface}.{member}: {reply.error_name}: {reply.body}")
    return reply.body


class Dev:
    """One connected device: its object paths and, for a JBD, the frame being reassembled."""

    def __init__(self, bus: MessageBus, mac: str) -> None:
        self.bus = bus
        self.path = "/org/bluez/hci0/dev_" + mac.upper().replace(":", "_")
        self.resolved = asyncio.Event()
        self.frame = bytearray()
        self.done = asyncio.Event()
        self.notify_path: str | None = None
        self.write_path: str | None = None
        self.record_path: str | None = None

    def on_signal(self, msg: Message) -> None:
        iface, changed, _ = msg.body
        if msg.path == self.path and iface == "org.bluez.Device1":
            if "ServicesResolved" in changed and changed["ServicesResolved"].value:
                self.resolved.set()
        elif msg.path == self.notify_path and "Value" in changed:
            self.frame.extend(changed["Value"].value)
            if len(self.frame) >= 4 and len(self.frame) >= 7 + self.frame[3]:
                self.done.set()

    async def connect(self) -> float:
        t0 = time.perf_counter()
        await call(self.bus, self.path, "org.bluez.Device1", "Connect")
        props = await call(self.bus, self.path, "org.freedesktop.DBus.Properties", "Get", "ss",
                           ["org.bluez.Device1", "ServicesResolved"])
        if not props[0].value:
            await asyncio.wait_for(self.resolved.wait(), 10)
        ms = (time.perf_counter() - t0) * 1000
        (objects,) = await call(self.bus, "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
        for path, ifaces in objects.items():
            ch = ifaces.get("org.bluez.GattCharacteristic1")
            if ch and path.startswith(self.path + "/"):
                uuid = ch["UUID"].value.lower()
                if uuid == NOTIFY_UUID:
                    self.notify_path = path
                elif uuid == WRITE_UUID:
                    self.write_path = path
                elif uuid in POWERMON_UUIDS:
                    self.record_path = path
        if self.notify_path:
            await call(self.bus, self.notify_path, "org.bluez.GattCharacteristic1", "StartNotify")
        return ms

    async def request(self, reg: int) -> None:
        """JBD: WriteValue of a read request, then wait for the last chunk of the reply."""
        self.frame.clear()
        self.done.clear()
        await call(self.bus, self.write_path, "org.bluez.GattCharacteristic1", "WriteValue", "aya{sv}",
                   [jbd_request(reg), {"type": Variant("s", "command")}])
        await asyncio.wait_for(self.done.wait(), 5)
        if self.frame[1] != reg:
            raise RuntimeError(f"reply to 0x{self.frame[1]:02X}, asked 0x{reg:02X}")

    async def poll(self) -> None:
        """What one blebatt poll asks: JBD 0x03 then 0x04; PowerMon one ReadValue."""
        if self.record_path:
            await call(self.bus, self.record_path, "org.bluez.GattCharacteristic1", "ReadValue",
                       "a{sv}", [{}])
        else:
            await self.request(0x03)
            await self.request(0x04)

    async def close(self) -> None:
        if self.notify_path:
            await call(self.bus, self.notify_path, "org.bluez.GattCharacteristic1", "StopNotify")
        await call(self.bus, self.path, "org.bluez.Device1", "Disconnect")


def stats(xs: list[float]) -> dict:
    return {
        "p50_ms": round(statistics.median(xs), 3),
        "p99_ms": round(pct(xs, 99), 3),
        "min_ms": round(min(xs), 3),
        "mean_ms": round(statistics.fmean(xs), 3),
    }


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mac", required=True, help="the JBD timed alone")
    ap.add_argument("--jbd", action="append", default=[], help="for the all-devices tick")
    ap.add_argument("--powermon", action="append", default=[], help="for the all-devices tick")
    ap.add_argument("-n", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()

    bus = await MessageBus(bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"],
                           bus_type=BusType.SYSTEM).connect()
    macs = [args.mac] + [m for m in args.jbd + args.powermon if m.upper() != args.mac.upper()]
    devs = {m.upper(): Dev(bus, m) for m in macs}
    by_path = {d.path: d for d in devs.values()}

    def on_message(msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL or msg.member != "PropertiesChanged":
            return
        for p, d in by_path.items():
            if msg.path == p or msg.path.startswith(p + "/"):
                d.on_signal(msg)
                return

    bus.add_message_handler(on_message)
    await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="AddMatch",
            signature="s",
            body=[f"type='signal',sender='{BLUEZ}',interface='org.freedesktop.DBus.Properties',"
                  f"member='PropertiesChanged',path_namespace='/org/bluez/hci0'"],
        )
    )

    one = devs[args.mac.upper()]
    connect_ms = await one.connect()
    if not one.write_path or not one.notify_path:
        raise RuntimeError("ff01/ff02 not found")
    out: dict = {"client": "dbus-fast low-level (Python 3.12)", "n": args.n,
                 "connect_to_services_resolved_ms": round(connect_ms, 3)}
    try:
        for _ in range(args.warmup):
            await one.request(0x03)
        single = []
        for _ in range(args.n):
            t = time.perf_counter()
            await one.request(0x03)
            single.append((time.perf_counter() - t) * 1000)
        out["request_0x03"] = stats(single)
        pair = []
        for _ in range(args.n):
            t = time.perf_counter()
            await one.poll()
            pair.append((time.perf_counter() - t) * 1000)
        out["request_0x03_then_0x04"] = stats(pair)

        others = [d for d in devs.values() if d is not one]
        if others:
            await asyncio.gather(*(d.connect() for d in others))
            for _ in range(args.warmup):
                await asyncio.gather(*(d.poll() for d in devs.values()))
            tick = []
            for _ in range(args.n):
                t = time.perf_counter()
                await asyncio.gather(*(d.poll() for d in devs.values()))
                tick.append((time.perf_counter() - t) * 1000)
            out["all_devices_tick"] = {"devices": len(devs), **stats(tick)}
    finally:
        await asyncio.gather(*(d.close() for d in devs.values()), return_exceptions=True)
        bus.disconnect()

    json.dump(out, sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
