/**
 * A QEMU x86-64 machine for network-boot tests: TCG only (no KVM), no display, COM1 to a log
 * file the test reads, one virtio NIC on QEMU's user-mode network (slirp) whose DHCP hands out
 * an HTTP boot file, and one virtio disk (opened with snapshot=on: the image never changes).
 *
 * `-nographic`, not just `-display none`: with it QEMU tells SeaBIOS (fw_cfg `etc/sercon-port`)
 * to mirror its text console on COM1, and that console is where SeaBIOS and iPXE's legacy ROM
 * print. Without it (and with `-nodefaults`, so no VGA either) their lines never reach the
 * log. OVMF writes to COM1 either way.
 *
 * Boot order is given per device with `bootindex` (NIC 1, disk 2), not with `-boot n`: SeaBIOS
 * honours both, but OVMF ignores `-boot` and only follows the fw_cfg boot order that `bootindex`
 * writes. Either way the machine tries the network first and then the disk.
 *
 * Firmware: SeaBIOS (package seabios) with iPXE's legacy option ROM, or OVMF (package ovmf) with
 * iPXE's EFI driver from the same ROM (package ipxe-qemu ships efi-virtio.rom, both in one).
 * Guest-side, 10.0.2.2 is the host's loopback: slirp turns the guest's connections to it into
 * connections to 127.0.0.1 on the host, so a server listening on 127.0.0.1 is reachable.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access, copyFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export const QEMU_BINARY = 'qemu-system-x86_64';

/** OVMF builds to try, newest layout first (Debian ships the 4 MiB one; older ones the 2 MiB). */
const OVMF_CANDIDATES = [
  { code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: '/usr/share/OVMF/OVMF_VARS_4M.fd' },
  { code: '/usr/share/OVMF/OVMF_CODE.fd', vars: '/usr/share/OVMF/OVMF_VARS.fd' },
];

export interface OvmfFirmware {
  /** The read-only code volume. */
  code: string;
  /** The pristine variable store; each machine boots on its own writable copy. */
  vars: string;
}

/** The OVMF firmware files, or an error naming the Debian package that provides them. */
export async function findOvmf(): Promise<OvmfFirmware> {
  for (const candidate of OVMF_CANDIDATES) {
    const present = await Promise.all(
      [candidate.code, candidate.vars].map((p) =>
        access(p).then(
          () => true,
          () => false,
        ),
      ),
    );
    if (present.every(Boolean)) return candidate;
  }
  throw new Error(
    `OVMF firmware not found (looked for ${OVMF_CANDIDATES.map((c) => c.code).join(', ')}): ` +
      'install the Debian package ovmf (`make deps-test` installs it)',
  );
}

/** Fails with the package name when qemu-system-x86_64 cannot run. */
export async function checkQemu(): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(QEMU_BINARY, ['--version'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    child.once('error', (err) =>
      reject(
        new Error(
          `${QEMU_BINARY} cannot run (${err.message}): install the Debian package ` +
            'qemu-system-x86 (`make deps-test` installs it)',
        ),
      ),
    );
    child.once('exit', (code) =>
      code === 0
        ? resolve(out.split('\n')[0] ?? '')
        : reject(new Error(`${QEMU_BINARY} --version exited ${code}`)),
    );
  });
}

export interface QemuOptions {
  /** Folder for the serial log (and the OVMF variable store copy). No commas in the path. */
  dir: string;
  /** Names the log file: `<name>.serial.log`. */
  name: string;
  /** `bios` (SeaBIOS) or an OVMF build. */
  firmware: 'bios' | OvmfFirmware;
  /** The NIC's MAC, `52:54:00:xx:xx:xx`. */
  mac: string;
  /** What slirp's DHCP offers as the boot file (an http:// URL iPXE chains). */
  bootUrl: string;
  /** A raw disk image; attached read-only to the guest's view (writes are discarded). */
  disk: string;
  memoryMiB?: number;
}

export interface QemuMachine {
  pid: number;
  serialLog: string;
  /** Everything COM1 has printed so far, raw. */
  serial(): Promise<string>;
  /**
   * Polls `check` (every 200 ms) with the serial text so far until it returns true. Throws,
   * with the serial log and QEMU's stderr in the message, after `timeoutMs` or if QEMU exits.
   * Resolves with the milliseconds since QEMU started.
   */
  waitFor(
    what: string,
    check: (serial: string) => boolean | Promise<boolean>,
    timeoutMs: number,
  ): Promise<number>;
  /** A failure message: `what`, then the serial log (escape sequences removed) and stderr. */
  report(what: string): Promise<string>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the process is gone. Idempotent. */
  stop(): Promise<void>;
}

/** Removes ANSI/VT escape sequences (firmware and iPXE colour and cursor codes). */
export function stripEscapes(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b(?:\[[0-9;?=]*[A-Za-z]|[()][0-9A-Za-z]|[=>c78])/g, '');
}

function checkPath(path: string): string {
  if (path.includes(',')) throw new Error(`QEMU option values cannot contain commas: ${path}`);
  return path;
}

/** Hints for QEMU start-up errors that mean a missing package. */
function packageHint(stderr: string): string {
  if (/romfile|efi-virtio\.rom|pxe-virtio\.rom/.test(stderr)) {
    return '\n(hint: the iPXE option ROMs come from the Debian package ipxe-qemu)';
  }
  if (/bios-256k\.bin|bios\.bin|PC BIOS/.test(stderr)) {
    return '\n(hint: the BIOS comes from the Debian package seabios)';
  }
  return '';
}

/** process.kill that ignores a process already gone (its exit event may still be queued). */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

export async function startQemu(options: QemuOptions): Promise<QemuMachine> {
  const serialLog = join(checkPath(options.dir), `${options.name}.serial.log`);
  const args = [
    '-machine',
    'pc',
    '-accel',
    'tcg',
    '-m',
    String(options.memoryMiB ?? 256),
    '-nodefaults',
    '-nographic',
    '-monitor',
    'none',
    '-no-reboot',
    '-serial',
    `file:${serialLog}`,
    '-netdev',
    `user,id=n0,bootfile=${checkPath(options.bootUrl)}`,
    '-device',
    `virtio-net-pci,netdev=n0,mac=${options.mac},bootindex=1`,
    '-drive',
    `if=none,id=d0,format=raw,snapshot=on,file=${checkPath(options.disk)}`,
    '-device',
    'virtio-blk-pci,drive=d0,bootindex=2',
  ];
  if (options.firmware !== 'bios') {
    const vars = join(options.dir, `${options.name}.OVMF_VARS.fd`);
    await copyFile(options.firmware.vars, vars);
    args.push(
      '-drive',
      `if=pflash,format=raw,unit=0,readonly=on,file=${checkPath(options.firmware.code)}`,
      '-drive',
      `if=pflash,format=raw,unit=1,file=${checkPath(vars)}`,
      // After iPXE exits, OVMF would try its own PXE (IPv4, IPv6) on the same NIC before the
      // disk, each with long TFTP timeouts under TCG: off, so the exit reaches the disk.
      '-fw_cfg',
      'name=opt/org.tianocore/IPv4PXESupport,string=n',
      '-fw_cfg',
      'name=opt/org.tianocore/IPv6PXESupport,string=n',
    );
  }

  const started = Date.now();
  const child: ChildProcess = spawn(QEMU_BINARY, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let exit: string | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      exit = `spawn error: ${err.message}`;
      resolve();
    });
  });
  if (child.pid === undefined) {
    await exited;
    throw new Error(
      `${QEMU_BINARY} did not start (${exit}): install the Debian package qemu-system-x86`,
    );
  }
  const pid = child.pid;

  const serial = () => readFile(serialLog, 'latin1').catch(() => '');

  const report = async (what: string) => {
    const log = stripEscapes(await serial()).replace(/\r/g, '');
    const shown = log.length > 12_000 ? `[...]\n${log.slice(-12_000)}` : log;
    return (
      `${what} (QEMU pid ${pid}, ${((Date.now() - started) / 1000).toFixed(1)} s after start` +
      `${exit ? `, exited with ${exit}` : ''})\n` +
      `--- serial log ${serialLog} ---\n${shown}\n--- QEMU stderr ---\n${stderr}` +
      packageHint(stderr)
    );
  };

  const waitFor: QemuMachine['waitFor'] = async (what, check, timeoutMs) => {
    const deadline = started + timeoutMs;
    for (;;) {
      if (await check(await serial())) return Date.now() - started;
      if (exit !== null) throw new Error(await report(`QEMU exited before ${what}`));
      if (Date.now() > deadline) {
        throw new Error(await report(`timed out after ${timeoutMs / 1000} s waiting for ${what}`));
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      if (exit !== null) return;
      signal(pid, 'SIGTERM');
      const killed = await Promise.race([
        exited.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 5_000)),
      ]);
      if (!killed && exit === null) {
        signal(pid, 'SIGKILL');
        await exited;
      }
    })();
    return stopping;
  };

  return { pid, serialLog, serial, waitFor, report, stop };
}
