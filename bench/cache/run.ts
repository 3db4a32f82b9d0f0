/**
 * Image-serving benchmark: N concurrent clients download a cached image from bty-web's artifact
 * cache (`GET /b/<token>/<name>`), against nginx serving the same bytes from a file, in the same
 * run. nginx is also the origin bty-web's cache is filled from, through the operator API
 * (`POST /catalog/entries`, `POST /cache/downloads`, `GET /cache`).
 *
 * Before the rounds, one download from each server is hashed and checked against the image's
 * sha256; that download also reads each server's file into the page cache, so every round
 * serves from memory. Then each round runs N curl processes at once against one server, the
 * servers alternating, and the aggregate throughput (bytes over the round's wall time) is
 * reported as the median of the rounds, with bty-web's share of nginx's. A measurement, not a
 * test: a missed target still exits 0; a failed download or a wrong sha256 exits 1.
 *
 *   node bench/cache/run.ts [--size 1GiB] [--clients 8] [--runs 5] [--work DIR] [--only nginx]
 *                           [--json FILE] [--update-docs] [--keep]
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { arch, release } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { VERSION } from '../../src/core/version.ts';
import { startBtyWeb, type RunningServer } from '../pxe/servers.ts';
import { downloadRound, hashDownload } from './clients.ts';
import { prepareImage, type BenchImage } from './image.ts';
import {
  judge,
  renderText,
  roundResult,
  updateDocs,
  type BenchReport,
  type ContenderResult,
  type MachineInfo,
} from './report.ts';
import {
  addCatalogEntry,
  fillCache,
  login,
  startNginxFiles,
  stateFolder,
  treeCpuSeconds,
} from './servers.ts';
import { runBench } from '../main.ts';

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, '../..');
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

const USAGE = `usage: node bench/cache/run.ts [options]   (or: make bench-cache BENCH_CACHE_ARGS='...')
  --size BYTES     image size; suffixes KiB, MiB and GiB allowed (default 1GiB)
  --clients N      concurrent downloads per round (default 8)
  --runs N         rounds per server; the median is reported (default 5)
  --limit SECONDS  give up on one download after this long (default 300)
  --work DIR       folder of the image (kept for later runs) and of bty-web's state, not on
                   tmpfs (default: .bench/cache in the repository)
  --only nginx     nginx alone (no bty-web): the client's and the machine's ceiling
  --json FILE      write the results as JSON
  --update-docs    rewrite the generated image-serving section of docs/performance.md
  --docs FILE      the document --update-docs rewrites (default docs/performance.md)
  --keep           keep bty-web's state folder (database, cache, log) and nginx's folder`;

interface Options {
  sizeBytes: number;
  clients: number;
  runs: number;
  limit: number;
  work: string;
  nginxOnly: boolean;
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

function parseSize(text: string): number {
  const match = /^(\d+)\s*(B|K|KiB|M|MiB|G|GiB)?$/i.exec(text.trim());
  if (!match) throw new UsageError(`--size: cannot read "${text}" (try 64MiB or 1GiB)`);
  const unit = (match[2] ?? 'B').toUpperCase()[0];
  const bytes =
    Number(match[1]) * (unit === 'G' ? GiB : unit === 'M' ? MiB : unit === 'K' ? KiB : 1);
  if (bytes < 1) throw new UsageError('--size must be at least 1 byte');
  return bytes;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: 'string', default: '1GiB' },
      clients: { type: 'string', default: '8' },
      runs: { type: 'string', default: '5' },
      limit: { type: 'string', default: '300' },
      work: { type: 'string', default: join(REPO, '.bench', 'cache') },
      only: { type: 'string' },
      json: { type: 'string' },
      'update-docs': { type: 'boolean', default: false },
      docs: { type: 'string', default: join(REPO, 'docs', 'performance.md') },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return null;
  if (values.only !== undefined && values.only !== 'nginx') {
    throw new UsageError('--only takes nginx (the ceiling alone)');
  }
  return {
    sizeBytes: parseSize(values.size),
    clients: whole('clients', values.clients, 1),
    runs: whole('runs', values.runs, 1),
    limit: whole('limit', values.limit, 1),
    work: resolve(values.work),
    nginxOnly: values.only === 'nginx',
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
  try {
    const r = await run(command, args);
    return pattern.exec(r.stdout + r.stderr)?.[1] ?? 'unknown';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`${command} is not installed (make bench-cache installs it)`, { cause: err });
    }
    throw err;
  }
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

interface Contender {
  result: ContenderResult;
  server: RunningServer;
  url: string;
}

/** One hashed download: the sha256 check, which also warms the server's file. */
async function check(c: Contender, image: BenchImage, limit: number): Promise<void> {
  log(`${c.result.id}: checking one download's sha256 (and warming its file)`);
  const got = await hashDownload(c.url, limit);
  const problems: string[] = [];
  if (got.status !== 200) problems.push(`HTTP ${got.status}`);
  if (got.contentLength !== image.sizeBytes) {
    problems.push(`Content-Length ${got.contentLength ?? 'missing'}`);
  }
  if (got.bytes !== image.sizeBytes) problems.push(`${got.bytes} of ${image.sizeBytes} bytes`);
  if (got.sha256 !== image.sha256) problems.push(`sha256 ${got.sha256.slice(0, 12)}… differs`);
  c.result.checkOk = problems.length === 0;
  c.result.check = c.result.checkOk
    ? `ok (sha256 ${image.sha256.slice(0, 12)}…)`
    : `WRONG: ${problems.join(', ')}`;
}

async function benchmark(options: Options): Promise<number> {
  if (!options.nginxOnly && !existsSync(join(REPO, 'dist', 'src', 'web', 'bin.js'))) {
    throw new Error("bty-web is not built; run 'make build' first");
  }
  const versions = {
    node: process.version,
    curl: `curl ${await versionOf('curl', ['--version'], /^curl (\S+)/m)}`,
    nginx: await versionOf('nginx', ['-v'], /nginx\/(\S+)/),
    btyWeb: VERSION,
  };
  const machine = await machineInfo();
  const notes: string[] = [];
  const busyBefore = await cpuBusy(1000);
  const image = await prepareImage(options.work, options.sizeBytes, log);

  const contenders: Contender[] = [];
  let nginx: RunningServer | null = null;
  let btyWeb: RunningServer | null = null;
  let stateDir: string | null = null;
  let cache: BenchReport['cache'] = null;
  try {
    const files = await startNginxFiles({ root: options.work, keep: options.keep });
    nginx = files;
    const origin = files.fileUrl(image.name);
    contenders.push({
      server: files,
      url: origin,
      result: {
        id: 'nginx',
        serves: 'the image file (sendfile)',
        rounds: [],
        check: '',
        checkOk: false,
      },
    });

    if (!options.nginxOnly) {
      stateDir = await stateFolder(options.work);
      log(`starting bty-web (state folder ${stateDir})`);
      btyWeb = await startBtyWeb({ stateDir });
      const op = await login(btyWeb.url);
      const ref = await addCatalogEntry(op, {
        name: `bench ${image.name}`,
        src: origin,
        sha256: image.sha256,
        sizeBytes: image.sizeBytes,
      });
      log(`filling bty-web's cache from ${origin}`);
      const cached = await fillCache(op, ref, origin, options.limit * 1000);
      cache = { mode: cached.mode, fillSeconds: cached.fillSeconds };
      if (cached.size !== image.sizeBytes || !cached.digest.endsWith(image.sha256)) {
        throw new Error(
          `bty-web's cache entry has size ${cached.size} and digest ${cached.digest}; ` +
            `expected ${image.sizeBytes} and sha256 ${image.sha256}`,
        );
      }
      // The fill's dirty pages are written back now, not during a timed round.
      await run('sync');
      contenders.push({
        server: btyWeb,
        url: btyWeb.url + cached.servePath,
        result: {
          id: 'bty-web',
          serves: 'its cache entry, GET /b/{token}/{name}',
          rounds: [],
          check: '',
          checkOk: false,
        },
      });
    }

    for (const c of contenders) await check(c, image, options.limit);
    if (contenders.some((c) => !c.result.checkOk)) {
      log('a sha256 check failed: no rounds run');
    } else {
      for (let r = 1; r <= options.runs; r++) {
        // Alternating which server goes first evens out drift over the run.
        const order = r % 2 === 1 ? contenders : [...contenders].reverse();
        for (const c of order) {
          const before = await treeCpuSeconds(c.server.pid);
          const round = await downloadRound(c.url, options.clients, options.limit);
          const serverCpu = (await treeCpuSeconds(c.server.pid)) - before;
          const result = roundResult(round, image.sizeBytes, serverCpu);
          c.result.rounds.push(result);
          log(
            `round ${r}/${options.runs}: ${c.result.id}: ${result.gibPerSecond.toFixed(2)} GiB/s` +
              (result.failures.length > 0 ? `, ${result.failures.length} failed downloads` : ''),
          );
        }
      }
    }
  } finally {
    await btyWeb?.stop();
    await nginx?.stop();
    if (stateDir !== null) {
      if (options.keep) log(`kept ${stateDir}`);
      else await rm(stateDir, { recursive: true, force: true });
    }
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
    imageBytes: image.sizeBytes,
    clients: options.clients,
    runs: options.runs,
    cache,
    contenders: contenders.map((c) => c.result),
    notes,
  };
  const report: BenchReport = { ...partial, verdicts: judge(partial) };
  process.stdout.write(renderText(report));
  if (options.json) await writeFile(options.json, JSON.stringify(report, null, 2) + '\n');
  if (options.updateDocs) {
    await updateDocs(options.docs, report);
    log(`${options.docs} updated`);
  }
  const wrong = report.contenders.filter(
    (c) => !c.checkOk || c.rounds.some((r) => r.failures.length > 0),
  );
  if (wrong.length > 0) {
    log(`FAILED: ${wrong.map((c) => c.id).join(', ')}: a wrong or failed download`);
    return 1;
  }
  return 0;
}

process.exitCode = await runBench(USAGE, parseOptions, benchmark);
