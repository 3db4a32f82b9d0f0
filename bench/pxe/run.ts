/**
 * PXE benchmark: a boot storm against a running bin/bty-web, with nginx serving a static iPXE
 * script as the ceiling in the same run. wrk (storm.lua) sends every load over keep-alive
 * connections:
 *
 * - a storm of distinct random MACs discovering themselves (`GET /pxe/<mac>`) on an empty
 *   database, then with a few and with many machines already present;
 * - one known MAC, requested over and over;
 * - the same two request patterns against nginx.
 *
 * After each server stops, its SQLite file must hold exactly one row and one discovery event per
 * distinct MAC. Prints requests/s, p50/p99 latency, errors and the ratio to nginx, and judges the
 * issue's targets. A measurement, not a test: missed targets still exit 0; a wrong database or a
 * load that could not run exits 1.
 *
 *   node bench/pxe/run.ts [--macs 5000] [--present 10000] [--few 10] [--repeat 10000]
 *                         [--connections 64] [--threads 1] [--warmup 2000] [--runs 3]
 *                         [--cpu-prof] [--json FILE] [--update-docs] [--keep]
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { arch, release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { VERSION } from '../../src/core/version.ts';
import { renderIpxeScript } from '../../src/web/ipxe.ts';
import { checkFleet, prepopulate, randomMacs, writePaths } from './fleet.ts';
import { findProfile, summariseProfile } from './profile.ts';
import {
  judge,
  loadRun,
  renderText,
  updateDocs,
  type BenchReport,
  type LoadRun,
  type MachineInfo,
  type ScenarioId,
  type ScenarioResult,
  type ServerCheck,
} from './report.ts';
import { startBtyWeb, startNginx, type RunningServer } from './servers.ts';
import { REQUEST_TIMEOUT_S, runWrk } from './wrk.ts';
import { runBench } from '../main.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const WARMUP_MACHINES = 16;

const USAGE = `usage: node bench/pxe/run.ts [options]   (or: make bench-pxe BENCH_PXE_ARGS='...')
  --macs N         distinct random MACs in each storm (default 5000)
  --present N      machines already present for the large-fleet storm (default 10000)
  --few N          machines already present for the small-fleet storm (default 10)
  --repeat N       requests for one known MAC (default 10000)
  --connections N  concurrent keep-alive connections (default 64)
  --threads N      wrk threads (default 1: the other core is bty-web's)
  --warmup N       requests before each bty-web load, from ${WARMUP_MACHINES} other machines (default 2000)
  --runs N         runs of every load; the median is reported (default 3)
  --limit SECONDS  give up on one load after this long (default 60)
  --cpu-prof       two more storms (empty, --present) against bty-web under --cpu-prof:
                   where its time goes
  --json FILE      write the results as JSON
  --update-docs    rewrite the generated PXE section of docs/performance.md
  --docs FILE      the document --update-docs rewrites (default docs/performance.md)
  --keep           keep the temporary folder (state databases, server logs)`;

interface Options {
  macs: number;
  present: number;
  few: number;
  repeat: number;
  connections: number;
  threads: number;
  warmup: number;
  runs: number;
  limit: number;
  cpuProf: boolean;
  json: string | null;
  updateDocs: boolean;
  docs: string;
  keep: boolean;
}

class UsageError extends Error {}

function whole(name: string, text: string, min: number): number {
  const n = Number(text);
  if (!/^\d+$/.test(text.trim()) || !Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`--${name} must be a whole number >= ${min}; got "${text}"`);
  }
  return n;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      macs: { type: 'string', default: '5000' },
      present: { type: 'string', default: '10000' },
      few: { type: 'string', default: '10' },
      repeat: { type: 'string', default: '10000' },
      connections: { type: 'string', default: '64' },
      threads: { type: 'string', default: '1' },
      warmup: { type: 'string', default: '2000' },
      runs: { type: 'string', default: '3' },
      limit: { type: 'string', default: '60' },
      'cpu-prof': { type: 'boolean', default: false },
      json: { type: 'string' },
      'update-docs': { type: 'boolean', default: false },
      docs: { type: 'string', default: join(REPO, 'docs', 'performance.md') },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return null;
  const options: Options = {
    macs: whole('macs', values.macs, 1),
    present: whole('present', values.present, 1),
    few: whole('few', values.few, 1),
    repeat: whole('repeat', values.repeat, 1),
    connections: whole('connections', values.connections, 1),
    threads: whole('threads', values.threads, 1),
    warmup: whole('warmup', values.warmup, 0),
    runs: whole('runs', values.runs, 1),
    limit: whole('limit', values.limit, 1),
    cpuProf: values['cpu-prof'],
    json: values.json ?? null,
    updateDocs: values['update-docs'],
    docs: resolve(values.docs),
    keep: values.keep,
  };
  if (options.threads > options.connections) {
    throw new UsageError('--threads must not exceed --connections');
  }
  return options;
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

/** Output of a version flag, which wrk prints on stdout with exit status 1. */
async function versionOf(command: string, args: string[], pattern: RegExp): Promise<string> {
  let text: string;
  try {
    const r = await run(command, args);
    text = r.stdout + r.stderr;
  } catch (err) {
    const e = err as { code?: unknown; stdout?: string; stderr?: string };
    if (e.code === 'ENOENT') {
      throw new Error(
        `${command} is not installed (Debian package ${command}; make bench-pxe installs it)`,
        { cause: err },
      );
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

interface Context {
  options: Options;
  work: string;
  /** Every MAC handed out so far: all loads use distinct ones. */
  taken: Set<string>;
  warmupMacs: string[];
  warmupPaths: string;
  scenarios: Map<ScenarioId, ScenarioResult>;
  checks: ServerCheck[];
}

function scenario(
  ctx: Context,
  id: ScenarioId,
  base: Omit<ScenarioResult, 'id' | 'runs'>,
): ScenarioResult {
  let s = ctx.scenarios.get(id);
  if (!s) {
    s = { id, runs: [], ...base };
    ctx.scenarios.set(id, s);
  }
  return s;
}

async function load(
  ctx: Context,
  server: RunningServer,
  pathsFile: string,
  count: number,
): Promise<LoadRun> {
  const result = await runWrk({
    url: server.url,
    pathsFile,
    count,
    connections: ctx.options.connections,
    threads: ctx.options.threads,
    limitSeconds: ctx.options.limit,
  });
  return loadRun(result, count);
}

/** Random MACs not used yet, written as a paths file for storm.lua. */
async function stormPaths(ctx: Context, name: string): Promise<{ file: string; macs: string[] }> {
  const macs = randomMacs(ctx.options.macs, ctx.taken);
  const file = join(ctx.work, `${name}.paths`);
  await writePaths(file, macs);
  return { file, macs };
}

interface BtyRun {
  label: string;
  /** How the server's database started, for the check's line. */
  start: string;
  run: number;
  template: string | null;
  present: readonly string[];
  /** Loads after the warm-up, in order; `repeat` is one present MAC over and over. */
  loads: Array<{ id: ScenarioId; title: string; kind: 'storm' | 'repeat' }>;
  nodeFlags?: string[];
}

/**
 * One bty-web server on a fresh state folder (a copy of the pre-populated template, if any):
 * warm-up, the timed loads, stop, then the database check.
 */
async function btyRun(
  ctx: Context,
  spec: BtyRun,
): Promise<{ runs: LoadRun[]; stormWindowUs: [number, number] | null; stateDir: string }> {
  const stateDir = join(ctx.work, `run${spec.run}-${spec.label}`);
  await mkdir(stateDir, { recursive: true });
  if (spec.template !== null) {
    for (const suffix of ['', '-wal']) {
      const from = join(spec.template, `state.db${suffix}`);
      if (existsSync(from)) await copyFile(from, join(stateDir, `state.db${suffix}`));
    }
  }
  const expected = new Set(spec.present);
  let pxeRequests = 0;
  const runs: LoadRun[] = [];
  let stormWindowUs: [number, number] | null = null;
  const server = await startBtyWeb({ stateDir, nodeFlags: spec.nodeFlags ?? [] });
  try {
    if (ctx.options.warmup > 0) {
      const warm = await load(ctx, server, ctx.warmupPaths, ctx.options.warmup);
      pxeRequests += ctx.options.warmup;
      for (const mac of ctx.warmupMacs) expected.add(mac);
      if (warm.received !== warm.requests) {
        log(`warning: warm-up got ${warm.received} answers for ${warm.requests} requests`);
      }
    }
    for (const l of spec.loads) {
      let file: string;
      let count: number;
      if (l.kind === 'storm') {
        const storm = await stormPaths(ctx, `run${spec.run}-${l.id}`);
        for (const mac of storm.macs) expected.add(mac);
        file = storm.file;
        count = storm.macs.length;
      } else {
        const known = spec.present[0];
        if (known === undefined) throw new Error('the one-MAC load needs a machine present');
        file = join(ctx.work, `run${spec.run}-${l.id}.paths`);
        await writePaths(file, [known]);
        count = ctx.options.repeat;
      }
      log(`run ${spec.run}: bty-web, ${l.title} (${count} requests)`);
      const t0 = process.hrtime.bigint();
      const result = await load(ctx, server, file, count);
      const t1 = process.hrtime.bigint();
      if (l.kind === 'storm' && stormWindowUs === null) {
        stormWindowUs = [Number(t0 / 1000n), Number(t1 / 1000n)];
      }
      pxeRequests += count;
      runs.push(result);
    }
  } finally {
    await server.stop();
  }
  const check = checkFleet(join(stateDir, 'state.db'), expected, pxeRequests);
  ctx.checks.push({
    server: `${spec.start}: ${spec.loads.map((l) => (l.kind === 'storm' ? 'storm' : 'one MAC')).join(' + ')}`,
    run: spec.run,
    check,
  });
  if (!check.ok)
    log(`run ${spec.run}: ${spec.label}: DATABASE CHECK FAILED: ${check.problems.join('; ')}`);
  return { runs, stormWindowUs, stateDir };
}

async function benchmark(options: Options): Promise<number> {
  const bin = join(REPO, 'dist', 'src', 'web', 'bin.js');
  if (!existsSync(bin)) throw new Error("bty-web is not built; run 'make build' first");
  const versions = {
    node: process.version,
    wrk: `wrk ${await versionOf('wrk', ['-v'], /^wrk (\S+)/m)}`,
    nginx: await versionOf('nginx', ['-v'], /nginx\/(\S+)/),
    btyWeb: VERSION,
  };
  const machine = await machineInfo();
  const work = await mkdtemp(join(tmpdir(), 'bty-bench-pxe-'));
  const notes: string[] = [];
  const busyBefore = await cpuBusy(1000);
  const taken = new Set<string>();
  const ctx: Context = {
    options,
    work,
    taken,
    warmupMacs: randomMacs(WARMUP_MACHINES, taken),
    warmupPaths: join(work, 'warmup.paths'),
    scenarios: new Map(),
    checks: [],
  };
  let nginx: RunningServer | null = null;
  const profiles: BenchReport['profiles'] = [];
  try {
    await writePaths(ctx.warmupPaths, ctx.warmupMacs);
    log(`pre-populating databases with ${options.few} and ${options.present} machines...`);
    const fewMacs = randomMacs(options.few, taken);
    const manyMacs = randomMacs(options.present, taken);
    const fewTemplate = join(work, 'template-few');
    const manyTemplate = join(work, 'template-many');
    await mkdir(fewTemplate);
    await mkdir(manyTemplate);
    await prepopulate(join(fewTemplate, 'state.db'), fewMacs);
    await prepopulate(join(manyTemplate, 'state.db'), manyMacs);

    // What bty-web answers a machine it has just discovered: the live environment chain.
    const script = renderIpxeScript('live-env', {
      mac: ctx.warmupMacs[0] ?? '02:00:00:00:00:01',
      host: '127.0.0.1:8080',
      version: VERSION,
    });
    nginx = await startNginx({ script, keep: options.keep });
    const n = (x: number) => x.toLocaleString('en-US');
    const titles = {
      storm: `storm, ${n(options.macs)} new MACs`,
      fresh: `storm, empty database`,
      few: `storm, ${n(options.few)} present`,
      many: `storm, ${n(options.present)} present`,
      repeat: 'one MAC repeatedly',
    };
    // Reported in this order.
    const nginxRandom = scenario(ctx, 'nginx-random', {
      title: titles.storm,
      server: 'nginx',
      present: null,
      requestsPerRun: options.macs,
      ceiling: null,
    });
    const fresh = scenario(ctx, 'fresh', {
      title: titles.fresh,
      server: 'bty-web',
      present: 0,
      requestsPerRun: options.macs,
      ceiling: 'nginx-random',
    });
    const few = scenario(ctx, 'few', {
      title: titles.few,
      server: 'bty-web',
      present: options.few,
      requestsPerRun: options.macs,
      ceiling: 'nginx-random',
    });
    const many = scenario(ctx, 'many', {
      title: titles.many,
      server: 'bty-web',
      present: options.present,
      requestsPerRun: options.macs,
      ceiling: 'nginx-random',
    });
    const nginxRepeat = scenario(ctx, 'nginx-repeat', {
      title: titles.repeat,
      server: 'nginx',
      present: null,
      requestsPerRun: options.repeat,
      ceiling: null,
    });
    const repeat = scenario(ctx, 'repeat', {
      title: `${titles.repeat} (${n(options.present)} present)`,
      server: 'bty-web',
      present: options.present,
      requestsPerRun: options.repeat,
      ceiling: 'nginx-repeat',
    });

    for (let r = 1; r <= options.runs; r++) {
      log(`run ${r}/${options.runs}: nginx, ${titles.storm} and ${titles.repeat}`);
      const storm = await stormPaths(ctx, `run${r}-nginx`);
      nginxRandom.runs.push(await load(ctx, nginx, storm.file, storm.macs.length));
      const one = join(work, `run${r}-nginx-one.paths`);
      await writePaths(one, [manyMacs[0] ?? '02:00:00:00:00:02']);
      nginxRepeat.runs.push(await load(ctx, nginx, one, options.repeat));

      const a = await btyRun(ctx, {
        label: 'fresh',
        start: 'empty database',
        run: r,
        template: null,
        present: [],
        loads: [{ id: 'fresh', title: titles.fresh, kind: 'storm' }],
      });
      fresh.runs.push(...a.runs);
      const b = await btyRun(ctx, {
        label: 'few',
        start: `${n(options.few)} present`,
        run: r,
        template: fewTemplate,
        present: fewMacs,
        loads: [{ id: 'few', title: titles.few, kind: 'storm' }],
      });
      few.runs.push(...b.runs);
      const c = await btyRun(ctx, {
        label: 'many',
        start: `${n(options.present)} present`,
        run: r,
        template: manyTemplate,
        present: manyMacs,
        loads: [
          { id: 'many', title: titles.many, kind: 'storm' },
          { id: 'repeat', title: repeat.title, kind: 'repeat' },
        ],
      });
      if (c.runs[0]) many.runs.push(c.runs[0]);
      if (c.runs[1]) repeat.runs.push(c.runs[1]);
    }

    if (options.cpuProf) {
      const targets = [
        { label: 'empty database', template: null, present: [] as string[], key: 'empty' },
        {
          label: `${n(options.present)} present`,
          template: manyTemplate,
          present: manyMacs,
          key: 'present',
        },
      ];
      await mkdir(join(REPO, '.bench', 'pxe'), { recursive: true });
      for (const t of targets) {
        log(`profiled run: bty-web under --cpu-prof, storm with ${t.label}`);
        const profDir = join(work, `cpu-prof-${t.key}`);
        await mkdir(profDir);
        const p = await btyRun(ctx, {
          label: `profiled-${t.key}`,
          start: `${t.label}, profiled`,
          run: options.runs + 1,
          template: t.template,
          present: t.present,
          loads: [{ id: 'fresh', title: `storm, ${t.label} (profiled)`, kind: 'storm' }],
          nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${profDir}`],
        });
        const file = await findProfile(profDir);
        const [from, to] = p.stormWindowUs ?? [0, 0];
        const summary = await summariseProfile(file, from, to);
        const kept = join(REPO, '.bench', 'pxe', `bty-web-storm-${t.key}.cpuprofile`);
        await copyFile(file, kept);
        const profiled = p.runs[0];
        if (profiled) {
          profiles.push({
            label: t.label,
            run: profiled,
            summary,
            file: kept.slice(REPO.length + 1),
          });
        }
      }
    }
  } finally {
    await nginx?.stop();
    if (options.keep) log(`kept ${work}`);
    else await rm(work, { recursive: true, force: true });
  }

  if (busyBefore > 0.1) {
    notes.push(
      `the machine was not idle: its CPUs were ${(busyBefore * 100).toFixed(0)} % busy in the ` +
        'second before the benchmark started (other processes competed for the cores)',
    );
  }
  const partial: Omit<BenchReport, 'verdicts'> = {
    date: new Date().toISOString().slice(0, 10),
    machine,
    versions,
    settings: {
      macs: options.macs,
      present: options.present,
      few: options.few,
      repeat: options.repeat,
      connections: options.connections,
      threads: options.threads,
      warmup: options.warmup,
      warmupMachines: options.warmup > 0 ? WARMUP_MACHINES : 0,
      runs: options.runs,
      requestTimeoutS: REQUEST_TIMEOUT_S,
    },
    scenarios: [...ctx.scenarios.values()],
    checks: ctx.checks,
    profiles,
    notes,
  };
  const report: BenchReport = { ...partial, verdicts: judge(partial) };
  process.stdout.write(renderText(report));
  if (options.json) await writeFile(options.json, JSON.stringify(report, null, 2) + '\n');
  if (options.updateDocs) {
    await updateDocs(options.docs, report);
    log(`${options.docs} updated`);
  }
  const failed = ctx.checks.filter((c) => !c.check.ok);
  if (failed.length > 0) {
    log(`FAILED: ${failed.length} server run(s) left a wrong database (see above)`);
    return 1;
  }
  return 0;
}

process.exitCode = await runBench(USAGE, parseOptions, benchmark);
