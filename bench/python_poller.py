"""A Python counterpart of `blebatt run`, for bench/run.py's side-by-side comparison.

    bench/.venv/bin/python bench/python_poller.py --jbd a=MAC --jbd b=MAC --powermon d=MAC

Behaves like blebatt's execd mode, as a typical Python user would write it:
- finds the devices with one bleak scan, then keeps one connection per device;
- JBD BMS: aiobmsble's JBD driver (`aiobmsble.bms.jbd_bms.BMS`, keep_alive=True), which asks
  registers 0x03 and 0x04 on every update, like blebatt; it reconnects by itself on the next
  update after a link loss;
- PowerMon: aiobmsble has no PowerMon driver, so a plain bleak `read_gatt_char` of the record
  characteristic (7a95ce01-... old firmware, else ec7c0001-...), reconnecting with
  bleak-retry-connector after a loss;
- every line on stdin is a tick: all devices are polled concurrently, a device still busy with
  the previous tick skips this one (coalescing, as blebatt does);
- one Influx line protocol line per device per successful poll on stdout (written by hand,
  flushed at once); logs on stderr ("connected" / "reconnected" / "poll failed");
- stdin EOF: disconnect every device and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak_retry_connector import establish_connection

from aiobmsble import BMSConfig
from aiobmsble.bms.jbd_bms import BMS as JbdBms

POWERMON_CHARS = (
    "7a95ce01-0ea8-1bcc-71a2-fc7539b81c9c",  # old firmware, 52-byte record
    "ec7c0001-2c7b-1539-172f-29d041beab3e",  # new firmware, COBS frame
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def spec(s: str) -> tuple[str, str]:
    name, sep, mac = s.partition("=")
    if not sep or not name or not mac:
        raise argparse.ArgumentTypeError(f"expected NAME=MAC, got {s!r}")
    return name, mac.upper()


def fmt(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f"{v}i"
    if isinstance(v, float):
        return repr(v)
    return '"' + str(v).replace('"', '\\"') + '"'


class Device:
    def __init__(self, name: str, mac: str, ble: BLEDevice) -> None:
        self.name = name
        self.mac = mac
        self.ble = ble
        self.busy = False
        self.ever_connected = False

    async def connect(self) -> None:
        raise NotImplementedError

    async def poll(self) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class Jbd(Device):
    def __init__(self, name: str, mac: str, ble: BLEDevice) -> None:
        super().__init__(name, mac, ble)
        self.bms = JbdBms(ble, BMSConfig(keep_alive=True))

    async def connect(self) -> None:
        await self.bms._connect()  # what `async with bms` / async_update() do

    async def poll(self) -> str:
        was = self.bms.is_connected
        sample = await self.bms.async_update()  # reconnects if the link was lost
        if not was:
            log(f"I! {self.name} ({self.mac}): reconnected")
        fields = {
            "voltage": sample.get("voltage"),
            "current": sample.get("current"),
            "power": sample.get("power"),
            "soc": sample.get("battery_level"),
            "cycles": sample.get("cycles"),
            "remaining_capacity": sample.get("cycle_charge"),
            "charge_fet": sample.get("chrg_mosfet"),
            "discharge_fet": sample.get("dischrg_mosfet"),
            "cell_delta": sample.get("delta_voltage"),
        }
        for i, v in enumerate(sample.get("cell_voltages", []), 1):
            fields[f"cell_{i}"] = float(v)
        for i, v in enumerate(sample.get("temp_values", []), 1):
            fields[f"temperature_{i}"] = float(v)
        body = ",".join(f"{k}={fmt(v)}" for k, v in fields.items() if v is not None)
        return f"jbd_bms,device={self.name},address={self.mac} {body} {time.time_ns()}"

    async def close(self) -> None:
        await self.bms.disconnect()


class PowerMon(Device):
    def __init__(self, name: str, mac: str, ble: BLEDevice) -> None:
        super().__init__(name, mac, ble)
        self.client: BleakClient | None = None
        self.char: str | None = None

    async def connect(self) -> None:
        self.client = await establish_connection(BleakClient, self.ble, self.mac)
        for uuid in POWERMON_CHARS:
            if self.client.services.get_characteristic(uuid) is not None:
                self.char = uuid
                break
        else:
            raise RuntimeError("no PowerMon characteristic")

    async def poll(self) -> str:
        if self.client is None or not self.client.is_connected:
            await self.connect()
            log(f"I! {self.name} ({self.mac}): reconnected")
        assert self.client is not None and self.char is not None
        raw = bytes(await self.client.read_gatt_char(self.char))
        return (
            f"powermon,device={self.name},address={self.mac} "
            f'record="{raw.hex()}",length={len(raw)}i {time.time_ns()}'
        )

    async def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.disconnect()


async def find(macs: set[str], timeout: float) -> dict[str, BLEDevice]:
    found: dict[str, BLEDevice] = {}
    done = asyncio.Event()

    def seen(dev: BLEDevice, _adv: object) -> None:
        if dev.address.upper() in macs and dev.address.upper() not in found:
            found[dev.address.upper()] = dev
            if len(found) == len(macs):
                done.set()

    async with BleakScanner(detection_callback=seen):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout)
    return found


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jbd", type=spec, action="append", default=[])
    ap.add_argument("--powermon", type=spec, action="append", default=[])
    ap.add_argument("--scan-timeout", type=float, default=15.0)
    args = ap.parse_args()

    wanted = {mac for _, mac in args.jbd + args.powermon}
    found = await find(wanted, args.scan_timeout)
    missing = wanted - set(found)
    if missing:
        log(f"E! not found by scanning: {', '.join(sorted(missing))}")
        return 1
    devices: list[Device] = [Jbd(n, m, found[m]) for n, m in args.jbd]
    devices += [PowerMon(n, m, found[m]) for n, m in args.powermon]

    out = sys.stdout

    async def connect(d: Device) -> None:
        try:
            await d.connect()
            d.ever_connected = True
            log(f"I! {d.name} ({d.mac}): connected")
        except Exception as e:  # retried by the next poll
            log(f"W! {d.name} ({d.mac}): connect failed: {e!r}")

    async def poll(d: Device) -> None:
        try:
            line = await d.poll()
            out.write(line + "\n")
            out.flush()
        except Exception as e:
            log(f"W! {d.name} ({d.mac}): poll failed: {e!r}")
        finally:
            d.busy = False

    # Connect to all at once, while stdin is already being read (like blebatt).
    connecting = {d.name: asyncio.create_task(connect(d)) for d in devices}

    async def poll_after_connect(d: Device) -> None:
        await connecting[d.name]
        await poll(d)

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    tasks: set[asyncio.Task[None]] = set()
    while True:
        line = await reader.readline()
        if not line:
            break
        for d in devices:
            if d.busy:
                continue  # coalesced: still busy with an earlier tick
            d.busy = True
            t = asyncio.create_task(poll_after_connect(d))
            tasks.add(t)
            t.add_done_callback(tasks.discard)

    log("I! stdin closed: stopping")
    if tasks:
        await asyncio.wait(tasks, timeout=0.3)
    for t in list(tasks) + list(connecting.values()):
        t.cancel()
    await asyncio.gather(
        *(asyncio.wait_for(d.close(), 1.5) for d in devices), return_exceptions=True
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
