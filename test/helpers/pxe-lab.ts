/**
 * A private PXE network for one test: a network namespace holding a bridge (the servers'
 * address) and a tap device enslaved to it (a QEMU guest's NIC), with Debian's dnsmasq as
 * the DHCP server only (`--port=0`: no DNS; no `enable-tftp`: the test brings its own TFTP
 * server). Every program runs inside the namespace through `ip netns exec`, which execs the
 * program in place, so the PID we spawn is the program's own PID and is what we stop.
 *
 * Nothing leaves the namespace: the test reads files (logs, dnsmasq's lease file, bty-web's
 * SQLite) from the shared file system, and talks to servers in the namespace with programs it
 * runs there (`lab.exec`, `lab.httpGet`). Namespace plumbing comes from netns.ts. `close()` stops every process the lab started, by PID, and deletes
 * the namespace (which deletes the bridge and the tap with it); it is safe to call after a
 * half-finished `createPxeLab` and more than once.
 */
import { type ChildProcess } from 'node:child_process';
import { access, constants, readFile, writeFile } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { createNetns, deleteNetns, execInNetns, ip, spawnInNetns, uniqueName } from './netns.ts';

/** iPXE's BIOS boot file from Debian's `ipxe` package (what the TFTP server serves). */
export const UNDIONLY_KPXE = '/usr/lib/ipxe/undionly.kpxe';

/** Programs the lab runs, and the Debian package each comes from. */
const PROGRAMS = [
  { name: 'ip', what: 'ip (network namespaces, bridge, tap)', pkg: 'iproute2' },
  { name: 'dnsmasq', what: 'dnsmasq (the DHCP server)', pkg: 'dnsmasq-base' },
  { name: 'curl', what: 'curl (reads bty-web inside the namespace)', pkg: 'curl' },
] as const;

/** Files the guest needs, and their Debian packages. */
const FILES = [
  { path: UNDIONLY_KPXE, what: "iPXE's BIOS boot file", pkg: 'ipxe' },
  {
    path: '/usr/lib/ipxe/qemu/pxe-virtio.rom',
    what: "QEMU's virtio-net option ROM (the guest's PXE firmware)",
    pkg: 'ipxe-qemu',
  },
] as const;

/**
 * The program's path: PATH first, then (except for ip, which netns.ts runs from PATH) the sbin
 * folders a non-login root shell may lack.
 */
async function findProgram(name: string): Promise<string | null> {
  const path = (process.env.PATH ?? '').split(delimiter);
  const folders = name === 'ip' ? path : [...path, '/usr/sbin', '/sbin'];
  for (const folder of folders.filter(Boolean)) {
    const candidate = join(folder, name);
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return null;
}

const programPaths = new Map<string, string>();

function program(name: (typeof PROGRAMS)[number]['name']): string {
  const path = programPaths.get(name);
  if (!path) throw new Error(`${name}: checkPxeLabPrerequisites() has not found it`);
  return path;
}

/**
 * Fails with every missing program or file and its Debian package (`make deps-test` installs
 * them), and when this process may not create network namespaces (root is needed).
 */
export async function checkPxeLabPrerequisites(): Promise<void> {
  const missing: string[] = [];
  for (const p of PROGRAMS) {
    const path = await findProgram(p.name);
    if (path) programPaths.set(p.name, path);
    else missing.push(`${p.what}: ${p.name} not found in PATH (Debian package ${p.pkg})`);
  }
  for (const f of FILES) {
    try {
      await access(f.path);
    } catch {
      missing.push(`${f.what}: ${f.path} is missing (Debian package ${f.pkg})`);
    }
  }
  if (process.getuid?.() !== 0) {
    missing.push('network namespaces, bridges and tap devices need root (run the tests as root)');
  }
  if (missing.length > 0) {
    throw new Error(
      `the PXE lab cannot be set up:\n  ${missing.join('\n  ')}\n` +
        '(`make deps-test` installs the packages)',
    );
  }
}

/** A program running inside the namespace. */
export interface LabProcess {
  name: string;
  pid: number;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  /** `code N` / `signal S` once it has exited, else null. */
  exitStatus(): string | null;
  /**
   * Polls `check` every 100 ms with the output so far. Throws (with the output) when the
   * process exits first or after `timeoutMs`.
   */
  waitForOutput(what: string, check: (output: string) => boolean, timeoutMs: number): Promise<void>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once it is gone. Idempotent. */
  stop(): Promise<void>;
}

export interface LabCommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface DnsmasqDhcp {
  process: LabProcess;
  /** `--log-dhcp` output: one exchange per transaction id, with what was asked and sent. */
  log(): string;
  /** The lease dnsmasq handed `mac` (from its lease file), or null. */
  leasedAddress(mac: string): Promise<string | null>;
}

export interface PxeLab {
  namespace: string;
  bridge: string;
  tap: string;
  /** The bridge's address: where the guest finds DHCP, TFTP and bty-web. */
  serverAddress: string;
  /** First and last address dnsmasq leases. */
  dhcpRange: [string, string];
  /** Starts a long-running program inside the namespace; `close()` stops it. */
  run(
    name: string,
    command: string,
    args: string[],
    options?: { env?: NodeJS.ProcessEnv },
  ): Promise<LabProcess>;
  /** Runs a short command inside the namespace, killed after `timeoutMs`. */
  exec(command: string, args: string[], timeoutMs?: number): Promise<LabCommandResult>;
  /** GET `url` with curl inside the namespace (servers there are unreachable from outside). */
  httpGet(url: string): Promise<{ status: number; body: string }>;
  /**
   * Starts dnsmasq on the bridge as DHCP only, with `config` (a dnsmasq.conf text) written to
   * `<dir>/dnsmasq.conf` after `dnsmasq --test` accepted it. Resolves once its DHCP socket is
   * bound.
   */
  startDnsmasq(dir: string, config: string): Promise<DnsmasqDhcp>;
  /** Stops every process (newest first) and deletes the namespace. Idempotent. */
  close(): Promise<void>;
}

/** process.kill that ignores a process already gone (its exit event may still be queued). */
function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

function trackProcess(name: string, child: ChildProcess): LabProcess {
  let output = '';
  const append = (d: string) => (output += d);
  child.stdout?.setEncoding('utf8').on('data', append);
  child.stderr?.setEncoding('utf8').on('data', append);
  let status: string | null = null;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, sig) => {
      status = sig ? `signal ${sig}` : `code ${code}`;
      resolve();
    });
    child.once('error', (err) => {
      status = `spawn error: ${err.message}`;
      resolve();
    });
  });
  const pid = child.pid ?? -1;

  const waitForOutput: LabProcess['waitForOutput'] = async (what, check, timeoutMs) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (check(output)) return;
      if (status !== null) {
        throw new Error(`${name} exited (${status}) before ${what}; its output:\n${output}`);
      }
      if (Date.now() > deadline) {
        throw new Error(`${name}: no ${what} within ${timeoutMs / 1000} s; its output:\n${output}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  let stopping: Promise<void> | null = null;
  const stop = () => {
    stopping ??= (async () => {
      if (status !== null || pid < 0) return;
      signal(pid, 'SIGTERM');
      const gone = await Promise.race([
        exited.then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), 5_000)),
      ]);
      if (!gone && status === null) {
        signal(pid, 'SIGKILL');
        await exited;
      }
    })();
    return stopping;
  };

  return { name, pid, output: () => output, exitStatus: () => status, waitForOutput, stop };
}

/**
 * Creates a namespace (`btypxe` + this process's PID + a counter, from netns.ts) with bridge
 * `btybr0` (10.77.0.1/24) and tap `btytap0` on it. The links live inside the namespace, so
 * their names and the subnet cannot clash with another run's.
 */
export async function createPxeLab(): Promise<PxeLab> {
  await checkPxeLabPrerequisites();
  const namespace = uniqueName('btypxe');
  const bridge = 'btybr0';
  const tap = 'btytap0';
  const serverAddress = '10.77.0.1';
  const dhcpRange: [string, string] = ['10.77.0.50', '10.77.0.99'];
  const processes: LabProcess[] = [];
  let created = false;
  let closing: Promise<void> | null = null;

  const close = () => {
    closing ??= (async () => {
      const errors: string[] = [];
      for (const p of [...processes].reverse()) {
        try {
          await p.stop();
        } catch (err) {
          errors.push(`stopping ${p.name} (pid ${p.pid}): ${(err as Error).message}`);
        }
      }
      if (created) {
        await deleteNetns(namespace);
        const left = await ip(['netns', 'list']).catch(() => '');
        if (left.split('\n').some((line) => line.split(' ')[0] === namespace)) {
          errors.push(`namespace ${namespace} is still there after ip netns delete`);
        }
      }
      if (errors.length > 0) throw new Error(`PXE lab clean-up: ${errors.join('; ')}`);
    })();
    return closing;
  };

  const run: PxeLab['run'] = async (name, command, args, options = {}) => {
    const child = spawnInNetns(namespace, command, args, { env: options.env ?? process.env });
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', resolve);
      child.once('error', (err) => reject(new Error(`${name} did not start: ${err.message}`)));
    });
    const p = trackProcess(name, child);
    processes.push(p);
    return p;
  };

  const exec: PxeLab['exec'] = async (command, args, timeoutMs = 15_000) => {
    try {
      const { stdout, stderr } = await execInNetns(namespace, command, args, { timeoutMs });
      return { code: 0, stdout, stderr };
    } catch (err) {
      // execFile's error carries the exit code and both outputs.
      const e = err as { code?: unknown; stdout?: string; stderr?: string; message: string };
      return {
        code: typeof e.code === 'number' ? e.code : null,
        stdout: e.stdout ?? '',
        stderr: e.stderr || e.message,
      };
    }
  };

  const httpGet: PxeLab['httpGet'] = async (url) => {
    const STATUS_MARK = '\n--bty-status:';
    const r = await exec(program('curl'), [
      '--silent',
      '--show-error',
      '--max-time',
      '10',
      '--write-out',
      `${STATUS_MARK}%{http_code}`,
      url,
    ]);
    const at = r.stdout.lastIndexOf(STATUS_MARK);
    if (r.code !== 0 || at < 0) {
      throw new Error(`curl ${url} in ${namespace} failed (exit ${r.code}): ${r.stderr.trim()}`);
    }
    return { status: Number(r.stdout.slice(at + STATUS_MARK.length)), body: r.stdout.slice(0, at) };
  };

  const startDnsmasq: PxeLab['startDnsmasq'] = async (dir, config) => {
    const confFile = `${dir}/dnsmasq.conf`;
    const leaseFile = `${dir}/dnsmasq.leases`;
    await writeFile(confFile, config);
    const args = [
      `--conf-file=${confFile}`,
      '--keep-in-foreground',
      '--log-facility=-',
      '--log-dhcp',
      // DHCP only: no DNS (port 0), no hosts/resolv files, no pid file, this bridge only.
      '--port=0',
      '--no-resolv',
      '--no-hosts',
      '--pid-file=',
      `--interface=${bridge}`,
      '--bind-interfaces',
      `--dhcp-range=${dhcpRange[0]},${dhcpRange[1]},255.255.255.0,1h`,
      `--dhcp-leasefile=${leaseFile}`,
    ];
    const check = await exec(program('dnsmasq'), ['--test', ...args]);
    if (check.code !== 0) {
      throw new Error(
        `dnsmasq --test rejected the configuration:\n${check.stderr}${check.stdout}\n--- ${confFile} ---\n${config}`,
      );
    }
    const p = await run('dnsmasq', program('dnsmasq'), args);
    await p.waitForOutput(
      'its DHCP socket bound',
      (out) => out.includes('DHCP, sockets bound exclusively to interface'),
      10_000,
    );
    return {
      process: p,
      log: () => p.output(),
      async leasedAddress(mac) {
        const text = await readFile(leaseFile, 'utf8').catch(() => '');
        // One lease a line: expiry, MAC, address, host name, client id.
        for (const line of text.split('\n')) {
          const [, leaseMac, address] = line.split(' ');
          if (leaseMac?.toLowerCase() === mac.toLowerCase() && address) return address;
        }
        return null;
      },
    };
  };

  try {
    await createNetns(namespace);
    created = true;
    const ipn = (...args: string[]) => ip(args, namespace);
    await ipn('link', 'add', bridge, 'type', 'bridge');
    await ipn('addr', 'add', `${serverAddress}/24`, 'dev', bridge);
    await ipn('link', 'set', bridge, 'up');
    await ipn('tuntap', 'add', 'dev', tap, 'mode', 'tap');
    await ipn('link', 'set', tap, 'master', bridge);
    await ipn('link', 'set', tap, 'up');
  } catch (err) {
    await close().catch(() => {});
    throw err;
  }

  return {
    namespace,
    bridge,
    tap,
    serverAddress,
    dhcpRange,
    run,
    exec,
    httpGet,
    startDnsmasq,
    close,
  };
}

/**
 * QEMU arguments for a BIOS machine (SeaBIOS) whose only boot device is a virtio NIC on the
 * lab's tap. Its option ROM (package ipxe-qemu) is the PXE firmware. No disk: once iPXE has
 * nothing left to boot, SeaBIOS stops, and `-no-reboot` keeps it from starting over.
 * `-nographic` makes SeaBIOS mirror its console (and the ROM's) on COM1, the serial log.
 */
export function pxeQemuArgs(options: { serialLog: string; tap: string; mac: string }): string[] {
  if (options.serialLog.includes(',')) {
    throw new Error(`QEMU option values cannot contain commas: ${options.serialLog}`);
  }
  return [
    '-machine',
    'pc',
    '-accel',
    'tcg',
    '-m',
    '256',
    '-nodefaults',
    '-nographic',
    '-monitor',
    'none',
    '-no-reboot',
    '-serial',
    `file:${options.serialLog}`,
    '-netdev',
    `tap,id=n0,ifname=${options.tap},script=no,downscript=no`,
    '-device',
    `virtio-net-pci,netdev=n0,mac=${options.mac},bootindex=1`,
  ];
}

/**
 * dnsmasq's `--log-dhcp` lines grouped by DHCP transaction: per transaction id, the user class
 * the client sent and, per reply, the boot file name dnsmasq sent. In order of first
 * appearance.
 */
export interface DhcpExchange {
  xid: string;
  userClass: string | null;
  /** `DHCPOFFER` / `DHCPACK` and the boot file name each carried (null: none). */
  replies: Array<{ type: string; bootfile: string | null }>;
}

export function dhcpExchanges(log: string): DhcpExchange[] {
  const byXid = new Map<string, DhcpExchange>();
  let current: { type: string; bootfile: string | null } | null = null;
  for (const line of log.split('\n')) {
    const m = /^dnsmasq-dhcp\[\d+\]: (\d+) (.*)$/.exec(line);
    if (!m) continue;
    const [, xid = '', rest = ''] = m;
    let exchange = byXid.get(xid);
    if (!exchange) {
      exchange = { xid, userClass: null, replies: [] };
      byXid.set(xid, exchange);
    }
    const userClass = /^user class: (.*)$/.exec(rest);
    if (userClass) exchange.userClass = userClass[1] ?? null;
    const reply = /^(DHCPOFFER|DHCPACK)\(/.exec(rest);
    if (reply) {
      current = { type: reply[1] ?? '', bootfile: null };
      exchange.replies.push(current);
    }
    const bootfile = /^sent size:\s*\d+ option: 67 bootfile-name\s+(.*)$/.exec(rest);
    if (bootfile && current) current.bootfile = bootfile[1]?.trim() ?? null;
  }
  return [...byXid.values()];
}
