/**
 * TFTP benchmark: bin/bty-tftp against Debian's tftpd-hpa in the same run, both serving the same
 * copy of iPXE's `ipxe.efi` to the same C client (atftp), on loopback and over a LAN-like veth
 * link between two network namespaces (with a small fixed netem delay). Cases, on each link:
 *
 * - default options (512-byte blocks, one ACK per block), then a large `blksize`;
 * - a large `blksize` plus `windowsize` (tftpd-hpa takes no `windowsize`: it answers in lock-step,
 *   which is what an operator running it would see);
 * - many clients at once (a boot storm), with and without `windowsize`.
 *
 * Every fetched file is checked by sha256. Prints medians and ours-vs-theirs ratios and judges the
 * issue's targets. A measurement, not a test: missed targets still exit 0; a wrong or failed fetch,
 * or a case that could not run, exits 1.
 *
 *   node bench/tftp/run.ts [--fetches 20] [--clients 32] [--runs 3] [--warmup 5]
 *                          [--blksize 1468] [--windowsize 16] [--delay-ms 0.2]
 *                          [--links loopback,veth] [--json FILE] [--update-docs] [--keep]
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { arch, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { VERSION } from '../../src/core/version.ts';
import {
  clientStartMs,
  fetchConcurrently,
  fetchOnce,
  grantedOptions,
  sha256File,
  type FetchResult,
  type FetchTarget,
  type TftpOptions,
} from './client.ts';
import { loopback, vethLink, type Link, type LinkId } from './link.ts';
import {
  judge,
  median,
  renderText,
  updateDocs,
  type BenchReport,
  type CaseId,
  type CaseResult,
  type ContenderResult,
  type LinkInfo,
  type MachineInfo,
} from './report.ts';
import {
  BTY_TFTP,
  IN_TFTPD,
  freeUdpPort,
  startServer,
  type RunningServer,
  type ServerKind,
} from './servers.ts';
import { runBench } from '../main.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const DEFAULT_FILE = '/usr/lib/ipxe/ipxe.efi';
/** The port both servers use inside the server's namespace (nothing else listens there). */
const NAMESPACE_PORTS = { ours: 6969, theirs: 6970 } as const;

const USAGE = `usage: node bench/tftp/run.ts [options]   (or: make bench-tftp BENCH_TFTP_ARGS='...')
  --fetches N      sequential fetches per case, server and run (default 20)
  --clients N      clients at once in the concurrent cases (default 32)
  --runs N         runs; the servers alternate within each (default 3)
  --warmup N       untimed fetches per server before each link's cases (default 5)
  --blksize N      the large block size (default 1468: a full 1500-byte Ethernet frame)
  --windowsize N   blocks per window in the windowsize cases (default 16)
  --delay-ms MS    netem delay on each end of the veth link (default 0.2; round trip twice that)
  --links LIST     loopback, veth or both, comma-separated (default loopback,veth; veth needs root)
  --file PATH      the file served (default ${DEFAULT_FILE})
  --limit SECONDS  give up on one fetch after this long (default 60)
  --ours SERVER    bty-tftp (default), or tftpd-hpa to check the harness against itself
  --json FILE      write the results as JSON
  --update-docs    rewrite the generated TFTP section of docs/performance.md
  --docs FILE      the document --update-docs rewrites (default docs/performance.md)
  --keep           keep the temporary folder (fetched files, server logs)`;

interface Options {
  fetches: number;
  clients: number;
  runs: number;
  warmup: number;
  blksize: number;
  windowsize: number;
  delayMs: number;
  links: LinkId[];
  file: string;
  limit: number;
  ours: ServerKind;
  json: string | null;
  updateDocs: boolean;
  docs: string;
  keep: boolean;
}

class UsageError extends Error {}

function whole(name: string, text: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw new UsageError(`--${name} must be a whole number from ${min} to ${max}; got "${text}"`);
  }
  return n;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      fetches: { type: 'string', default: '20' },
      clients: { type: 'string', default: '32' },
      runs: { type: 'string', default: '3' },
      warmup: { type: 'string', default: '5' },
      blksize: { type: 'string', default: '1468' },
      windowsize: { type: 'string', default: '16' },
      'delay-ms': { type: 'string', default: '0.2' },
      links: { type: 'string', default: 'loopback,veth' },
      file: { type: 'string', default: DEFAULT_FILE },
      limit: { type: 'string', default: '60' },
      ours: { type: 'string', default: 'bty-tftp' },
      json: { type: 'string' },
      'update-docs': { type: 'boolean', default: false },
      docs: { type: 'string', default: join(REPO, 'docs', 'performance.md') },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return null;
  const delayMs = Number(values['delay-ms']);
  if (!Number.isFinite(delayMs) || delayMs < 0 || delayMs > 100) {
    throw new UsageError(`--delay-ms must be a number of milliseconds from 0 to 100`);
  }
  const links = values.links.split(',').map((l) => l.trim());
  for (const l of links) {
    if (l !== 'loopback' && l !== 'veth') {
      throw new UsageError(`--links takes loopback and/or veth; got "${l}"`);
    }
  }
  if (values.ours !== 'bty-tftp' && values.ours !== 'tftpd-hpa') {
    throw new UsageError(`--ours must be bty-tftp or tftpd-hpa; got "${values.ours}"`);
  }
  return {
    fetches: whole('fetches', values.fetches, 1),
    clients: whole('clients', values.clients, 1, 1000),
    runs: whole('runs', values.runs, 1),
    warmup: whole('warmup', values.warmup, 0),
    // RFC 2348's range, and RFC 7440's.
    blksize: whole('blksize', values.blksize, 8, 65464),
    windowsize: whole('windowsize', values.windowsize, 1, 65535),
    delayMs,
    links: [...new Set(links)] as LinkId[],
    file: resolve(values.file),
    limit: whole('limit', values.limit, 1),
    ours: values.ours,
    json: values.json ?? null,
    updateDocs: values['update-docs'],
    docs: resolve(values.docs),
    keep: values.keep,
  };
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

async function machineInfo(): Promise<MachineInfo> {
  const nproc = Number((await run('nproc')).stdout.trim());
  const free = (await run('free', ['-g'])).stdout;
  const memoryGiB = Number(/^Mem:\s+(\d+)/m.exec(free)?.[1] ?? 0);
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown CPU';
  return { nproc, memoryGiB, cpu, kernel: release(), arch: arch() === 'x64' ? 'x86_64' : arch() };
}

async function versionOf(command: string, args: string[], pattern: RegExp): Promise<string> {
  let text: string;
  try {
    const r = await run(command, args);
    text = r.stdout + r.stderr;
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error(`${command} is not installed (make bench-tftp installs it)`, { cause: err });
    }
    text = (e.stdout ?? '') + (e.stderr ?? '');
  }
  return pattern.exec(text)?.[1] ?? 'unknown';
}

/** The share of CPU time the whole machine spent busy over the next `ms` (from /proc/stat). */
async function cpuBusy(ms: number): Promise<number> {
  const sample = async () => {
    const line = (await readFile('/proc/stat', 'utf8')).split('\n')[0] ?? '';
    const t = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const idle = (t[3] ?? 0) + (t[4] ?? 0);
    return { idle, total: t.reduce((a, b) => a + b, 0) };
  };
  const a = await sample();
  await new Promise((done) => setTimeout(done, ms));
  const b = await sample();
  const total = b.total - a.total;
  return total > 0 ? 1 - (b.idle - a.idle) / total : 0;
}

interface CaseSpec {
  id: CaseId;
  title: string;
  options: TftpOptions;
  clients: number;
  target: CaseResult['target'];
}

function caseSpecs(o: Options): CaseSpec[] {
  const large: TftpOptions = { blksize: o.blksize, windowsize: null };
  const windowed: TftpOptions = { blksize: o.blksize, windowsize: o.windowsize };
  const n = o.clients;
  return [
    {
      id: 'default',
      title: 'default options',
      options: { blksize: null, windowsize: null },
      clients: 1,
      target: 'equal',
    },
    { id: 'blksize', title: `blksize ${o.blksize}`, options: large, clients: 1, target: 'equal' },
    {
      id: 'window',
      title: `blksize ${o.blksize} + windowsize ${o.windowsize}`,
      options: windowed,
      clients: 1,
      target: 'window',
    },
    {
      id: 'storm',
      title: `${n} at once, blksize ${o.blksize}`,
      options: large,
      clients: n,
      target: 'equal',
    },
    {
      id: 'storm-window',
      title: `${n} at once, blksize ${o.blksize} + windowsize ${o.windowsize}`,
      options: windowed,
      clients: n,
      target: null,
    },
  ];
}

interface Side {
  who: 'ours' | 'theirs';
  server: RunningServer;
  result: ContenderResult;
}

interface Context {
  options: Options;
  work: string;
  expectedSha: string;
  /** Counts every fetched file, so no two fetches write the same path. */
  serial: number;
  /** Set by SIGINT/SIGTERM: the next fetch throws, and the finally blocks clean up. */
  interrupted: boolean;
}

function stopIfInterrupted(ctx: Context): void {
  if (ctx.interrupted) throw new Error('interrupted');
}

/** Checks each fetched file's sha256 (untimed) and deletes it; records failures. */
async function account(
  ctx: Context,
  result: ContenderResult,
  fetches: Array<{ fetch: FetchResult; local: string }>,
): Promise<void> {
  for (const { fetch, local } of fetches) {
    result.fetches++;
    if (!fetch.ok) {
      result.failures.push(fetch.error ?? 'failed');
    } else {
      const sha = await sha256File(local).catch(() => 'unreadable');
      if (sha === ctx.expectedSha) result.intact++;
      else result.failures.push(`wrong content: sha256 ${sha}`);
    }
    if (!ctx.options.keep) await rm(local, { force: true });
  }
}

async function measureCase(
  ctx: Context,
  link: Link,
  spec: CaseSpec,
  side: Side,
  runIndex: number,
): Promise<void> {
  const target: FetchTarget = {
    prefix: link.clientPrefix,
    host: link.serverAddress,
    port: side.server.port,
    remote: 'ipxe.efi',
  };
  const limitMs = ctx.options.limit * 1000;
  const next = () => join(ctx.work, 'fetched', `${link.id}-${side.who}-${ctx.serial++}.efi`);
  const times: number[] = [];
  if (spec.clients === 1) {
    for (let i = 0; i < ctx.options.fetches; i++) {
      stopIfInterrupted(ctx);
      const local = next();
      const fetch = await fetchOnce(target, spec.options, local, limitMs);
      if (fetch.ok) times.push(fetch.ms);
      await account(ctx, side.result, [{ fetch, local }]);
    }
  } else {
    stopIfInterrupted(ctx);
    const locals = Array.from({ length: spec.clients }, next);
    const burst = await fetchConcurrently(target, spec.options, locals, limitMs);
    if (burst.fetches.every((f) => f.ok)) times.push(burst.wallMs);
    await account(
      ctx,
      side.result,
      burst.fetches.map((fetch, i) => ({ fetch, local: locals[i] ?? '' })),
    );
  }
  side.result.runsMs[runIndex] = times;
}

function emptyResult(server: string): ContenderResult {
  return { server, runsMs: [], granted: null, fetches: 0, intact: 0, failures: [] };
}

async function benchLink(
  ctx: Context,
  link: Link,
  root: string,
  cases: CaseResult[],
): Promise<LinkInfo> {
  const o = ctx.options;
  const specs = caseSpecs(o);
  const probe = (who: string) => ({
    target: { prefix: link.clientPrefix, host: link.serverAddress, remote: 'ipxe.efi' },
    local: join(ctx.work, 'fetched', `${link.id}-${who}-probe.efi`),
  });
  const port = async (who: 'ours' | 'theirs') =>
    link.id === 'loopback' ? freeUdpPort() : NAMESPACE_PORTS[who];
  const servers: RunningServer[] = [];
  try {
    const start = async (who: 'ours' | 'theirs', kind: ServerKind) => {
      const server = await startServer({
        kind,
        root,
        address: link.serverAddress,
        port: await port(who),
        prefix: link.serverPrefix,
        log: join(ctx.work, `${link.id}-${who}-${kind}.log`),
        probe: probe(who),
      });
      servers.push(server);
      return server;
    };
    const ours = await start('ours', o.ours);
    const theirs = await start('theirs', 'tftpd-hpa');
    log(
      `${link.id}: ${o.ours} pid ${ours.pid} port ${ours.port}, tftpd-hpa pid ${theirs.pid} port ${theirs.port}`,
    );

    const starts: number[] = [];
    for (let i = 0; i < 5; i++) starts.push(await clientStartMs(link.clientPrefix));

    const sides = new Map<CaseId, Side[]>();
    for (const spec of specs) {
      const mine: Side[] = [
        { who: 'ours', server: ours, result: emptyResult(o.ours) },
        { who: 'theirs', server: theirs, result: emptyResult('tftpd-hpa') },
      ];
      // What each server grants for these options, from one traced (untimed) fetch.
      for (const side of mine) {
        const p = probe(side.who);
        const g = await grantedOptions(
          { ...p.target, port: side.server.port },
          spec.options,
          p.local,
          o.limit * 1000,
        );
        if (!g.ok) throw new Error(`${link.id}: ${side.result.server}: ${spec.title}: ${g.error}`);
        side.result.granted = g.oack;
      }
      sides.set(spec.id, mine);
    }

    for (const side of [
      { who: 'ours', server: ours },
      { who: 'theirs', server: theirs },
    ] as const) {
      const scratch = emptyResult('warm-up');
      for (let i = 0; i < o.warmup; i++) {
        const local = join(ctx.work, 'fetched', `${link.id}-${side.who}-warmup.efi`);
        const fetch = await fetchOnce(
          {
            prefix: link.clientPrefix,
            host: link.serverAddress,
            port: side.server.port,
            remote: 'ipxe.efi',
          },
          { blksize: o.blksize, windowsize: o.windowsize },
          local,
          o.limit * 1000,
        );
        await account(ctx, scratch, [{ fetch, local }]);
      }
      if (scratch.failures.length > 0) {
        throw new Error(`${link.id}: warm-up of ${side.who} failed: ${scratch.failures[0]}`);
      }
    }

    for (let r = 0; r < o.runs; r++) {
      for (const spec of specs) {
        const pair = sides.get(spec.id) ?? [];
        // Alternate who goes first, so a drift in the machine's load does not favour one.
        const order = r % 2 === 0 ? pair : [...pair].reverse();
        for (const side of order) {
          log(`${link.id}: run ${r + 1}/${o.runs}: ${spec.title}: ${side.result.server}`);
          await measureCase(ctx, link, spec, side, r);
        }
      }
    }
    for (const spec of specs) {
      const [a, b] = sides.get(spec.id) ?? [];
      if (!a || !b) continue;
      cases.push({
        link: link.id,
        id: spec.id,
        title: spec.title,
        options: spec.options,
        clients: spec.clients,
        ours: a.result,
        theirs: b.result,
        target: spec.target,
      });
    }
    return {
      id: link.id,
      title: link.title,
      delayMs: link.delayMs,
      clientStartMs: median(starts) ?? 0,
    };
  } finally {
    for (const s of servers.reverse()) await s.stop();
  }
}

async function benchmark(options: Options): Promise<number> {
  if (options.ours === 'bty-tftp' && !existsSync(join(REPO, 'dist', 'src', 'tftp', 'bin.js'))) {
    throw new Error("bty-tftp is not built; run 'make build' first");
  }
  if (options.ours === 'bty-tftp' && !existsSync(BTY_TFTP))
    throw new Error(`${BTY_TFTP} is missing`);
  if (!existsSync(IN_TFTPD)) throw new Error(`${IN_TFTPD} is missing (Debian package tftpd-hpa)`);
  if (options.links.includes('veth') && process.getuid?.() !== 0) {
    throw new Error('the veth link needs root (network namespaces); use --links loopback');
  }
  const versions = {
    node: process.version,
    atftp: await versionOf('atftp', ['--version'], /^(atftp-\S+)/m),
    tftpdHpa: await versionOf(IN_TFTPD, ['-V'], /^(tftp-hpa \S+?),?\s/m),
    bty: VERSION,
  };
  const machine = await machineInfo();
  const bytes = (await stat(options.file)).size;
  const expectedSha = await sha256File(options.file);
  const busyBefore = await cpuBusy(1000);
  const work = await mkdtemp(join(tmpdir(), 'bty-bench-tftp-'));
  const ctx: Context = { options, work, expectedSha, serial: 0, interrupted: false };
  const cases: CaseResult[] = [];
  const links: LinkInfo[] = [];
  const notes: string[] = [];
  let current: Link | null = null;
  // A Ctrl-C must not leave namespaces behind: stop here, let the finally blocks clean up.
  const onSignal = () => {
    ctx.interrupted = true;
    log('interrupted: cleaning up');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    // tftpd-hpa drops to `nobody` and chroots: a world-readable folder of its own, with a real
    // copy of the file (the Debian path is a symlink out of the folder).
    const root = join(work, 'root');
    await mkdir(root, { mode: 0o755 });
    await mkdir(join(work, 'fetched'));
    await chmod(work, 0o755);
    await copyFile(options.file, join(root, 'ipxe.efi'));
    await chmod(join(root, 'ipxe.efi'), 0o644);
    for (const id of options.links) {
      stopIfInterrupted(ctx);
      current = id === 'loopback' ? loopback() : await vethLink(options.delayMs);
      log(`link: ${current.title}`);
      try {
        links.push(await benchLink(ctx, current, root, cases));
      } finally {
        await current.remove();
        current = null;
      }
    }
  } finally {
    await current?.remove();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (options.keep) log(`kept ${work}`);
    else await rm(work, { recursive: true, force: true });
  }

  if (busyBefore > 0.1) {
    notes.push(
      `the machine was not idle: its CPUs were ${(busyBefore * 100).toFixed(0)} % busy in the ` +
        'second before the benchmark started (other processes competed for the cores)',
    );
  }
  const veth = links.find((l) => l.id === 'veth');
  if (veth && veth.delayMs === 0 && options.delayMs > 0) {
    notes.push(
      `the veth link has no added delay: this kernel has no tc netem (CONFIG_NET_SCH_NETEM), so ` +
        `its round trip is only the kernel's (tens of microseconds), shorter than a LAN's; ` +
        `windowsize saves more where round trips are longer`,
    );
  }
  const theirsWindow = cases.find((c) => c.id === 'window')?.theirs.granted ?? null;
  if (theirsWindow === null || !/windowsize/.test(theirsWindow)) {
    notes.push(
      `tftpd-hpa granted no windowsize (its OACK: ${theirsWindow ?? 'none'}): in the windowsize ` +
        'cases it sends one block per ACK, which is what a client asking it for windowsize gets',
    );
  }
  if (options.ours === 'tftpd-hpa') {
    notes.push(
      '"ours" was a second tftpd-hpa (--ours tftpd-hpa): a check of the harness, not of bty-tftp',
    );
  }
  const partial: Omit<BenchReport, 'verdicts'> = {
    date: new Date().toISOString().slice(0, 10),
    machine,
    versions,
    file: { path: options.file, bytes, sha256: expectedSha },
    settings: {
      fetches: options.fetches,
      clients: options.clients,
      runs: options.runs,
      warmup: options.warmup,
      blksize: options.blksize,
      windowsize: options.windowsize,
      delayMs: options.delayMs,
      ours: options.ours,
    },
    links,
    cases,
    notes,
  };
  const report: BenchReport = { ...partial, verdicts: judge(partial) };
  process.stdout.write(renderText(report));
  if (options.json) await writeFile(options.json, JSON.stringify(report, null, 2) + '\n');
  if (options.updateDocs) {
    await updateDocs(options.docs, report);
    log(`${options.docs} updated`);
  }
  const bad = cases.flatMap((c) => [c.ours, c.theirs]).filter((k) => k.failures.length > 0);
  if (bad.length > 0) {
    log(`FAILED: ${bad.length} case(s) had failed fetches or wrong content (see above)`);
    return 1;
  }
  return 0;
}

process.exitCode = await runBench(USAGE, parseOptions, benchmark);
