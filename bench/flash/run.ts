/**
 * Flash benchmark: `bty flash` against the upstream pipeline shapes (`dd`, `gzip -dc | dd`,
 * `zstd -dc | dd`) and `bmaptool copy`, on a generated image flashed to a regular file and to a
 * loop device. Prints median wall times, ratios and peak RSS per configuration, and judges them
 * against the targets. A measurement, not a test: missed targets still exit 0; a wrong
 * result on the target (or a contender that cannot run) exits 1.
 *
 *   node bench/flash/run.ts [--size 2GiB] [--runs 3] [--only raw|gz|zst] [--work DIR] [--keep]
 *                           [--json FILE] [--update-docs]
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { arch, release } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { convertImage, makeRawImage, sha256File } from '../../test/helpers/images.ts';
import { createLoopDevice, isRoot, type LoopDevice } from '../../test/helpers/loop.ts';
import {
  judge,
  renderText,
  updateDocs,
  type BenchFormat,
  type BenchReport,
  type BenchTarget,
  type ConfigResult,
  type ContenderName,
  type ContenderResult,
  type MachineInfo,
} from './report.ts';
import { runBench } from '../main.ts';

const run = promisify(execFile);
const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const SEED = 1;
const RANDOM_FRACTION = 0.25;
const LOOP_SLACK = 64 * MiB;
/** Filesystem magic numbers (statfs f_type) of memory-backed filesystems. */
const MEMORY_FILESYSTEMS = new Set([0x01021994 /* tmpfs */, 0x858458f6 /* ramfs */]);
const REPO = resolve(import.meta.dirname, '../..');
const BTY = join(REPO, 'bin', 'bty');
const TIME = '/usr/bin/time';

const USAGE = `usage: node bench/flash/run.ts [options]   (or: make bench BENCH_ARGS='...')
  --size BYTES     image size, a multiple of 1 MiB; suffixes MiB and GiB allowed (default 2GiB)
  --runs N         timed runs per contender and configuration; the median is reported (default 3)
  --only FORMAT    raw, gz or zst only (default: all three)
  --work DIR       work folder, not on tmpfs (default: .bench/flash in the repository)
  --keep           also keep the target file (the cached images are always kept for re-runs;
                   remove them with 'make clean')
  --cold           drop the page cache before every run and leave the source cold too (default:
                   the source is read once after the drop, so the disk holding it is not timed)
  --json FILE      write the results as JSON
  --update-docs    rewrite the generated figures section of docs/performance.md`;

interface Options {
  sizeBytes: number;
  runs: number;
  formats: BenchFormat[];
  work: string;
  keep: boolean;
  cold: boolean;
  json: string | null;
  updateDocs: boolean;
}

class UsageError extends Error {}

function parseSize(text: string): number {
  const match = /^(\d+)\s*(B|K|KiB|M|MiB|G|GiB)?$/i.exec(text.trim());
  if (!match) throw new UsageError(`--size: cannot read "${text}" (try 64MiB or 2GiB)`);
  const unit = (match[2] ?? 'B').toUpperCase()[0];
  const factor = unit === 'G' ? GiB : unit === 'M' ? MiB : unit === 'K' ? KiB : 1;
  const bytes = Number(match[1]) * factor;
  if (bytes % MiB !== 0 || bytes < 4 * MiB) {
    throw new UsageError(`--size must be a multiple of 1 MiB and at least 4 MiB; got ${bytes}`);
  }
  return bytes;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: 'string', default: '2GiB' },
      runs: { type: 'string', default: '3' },
      only: { type: 'string' },
      work: { type: 'string', default: join(REPO, '.bench', 'flash') },
      keep: { type: 'boolean', default: false },
      cold: { type: 'boolean', default: false },
      json: { type: 'string' },
      'update-docs': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) return null;
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1)
    throw new UsageError('--runs must be a whole number >= 1');
  const only = values.only;
  if (only !== undefined && only !== 'raw' && only !== 'gz' && only !== 'zst') {
    throw new UsageError('--only must be raw, gz or zst');
  }
  return {
    sizeBytes: parseSize(values.size),
    runs,
    formats: only === undefined ? ['raw', 'gz', 'zst'] : [only],
    work: resolve(values.work),
    keep: values.keep,
    cold: values.cold,
    json: values.json ?? null,
    updateDocs: values['update-docs'],
  };
}

interface Images {
  source: Record<BenchFormat, string>;
  sourceBytes: Record<BenchFormat, number>;
  bmap: string;
  sha256: string;
}

/** The image and its compressed forms and bmap, made once per size and seed and then reused. */
async function prepareImages(work: string, sizeBytes: number): Promise<Images> {
  const base = join(work, `image-${sizeBytes / MiB}MiB-seed${SEED}`);
  const source = { raw: `${base}.img`, gz: `${base}.img.gz`, zst: `${base}.img.zst` };
  const bmap = `${base}.img.bmap`;
  // Written last: its presence means every file beside it is complete.
  const manifest = `${base}.json`;
  const cached = await readFile(manifest, 'utf8')
    .then((text) => JSON.parse(text) as { sha256: string })
    .catch(() => null);
  if (!cached || ![...Object.values(source), bmap].every((p) => existsSync(p))) {
    log(`generating the ${sizeBytes / MiB} MiB image (cached in ${work} for later runs)...`);
    const raw = await makeRawImage(source.raw, {
      sizeBytes,
      seed: SEED,
      randomFraction: RANDOM_FRACTION,
    });
    log('compressing it with gzip and zstd at their default levels...');
    await Promise.all([
      convertImage(raw.path, 'img.gz', source.gz, { level: 'default' }),
      convertImage(raw.path, 'img.zst', source.zst, { level: 'default' }),
    ]);
    log('making the block map with bmaptool create...');
    await run('bmaptool', ['create', '-o', bmap, source.raw]);
    await writeFile(manifest, JSON.stringify({ sha256: raw.sha256, sizeBytes, seed: SEED }));
    return withSizes(source, bmap, raw.sha256);
  }
  log(`reusing the cached image ${source.raw}`);
  return withSizes(source, bmap, cached.sha256);
}

async function withSizes(
  source: Record<BenchFormat, string>,
  bmap: string,
  sha256: string,
): Promise<Images> {
  const sizeOf = async (p: string) => (await stat(p)).size;
  return {
    source,
    bmap,
    sha256,
    sourceBytes: {
      raw: await sizeOf(source.raw),
      gz: await sizeOf(source.gz),
      zst: await sizeOf(source.zst),
    },
  };
}

/** Refuses a memory-backed work folder and one without room, saying how much is needed. */
async function checkWorkDir(options: Options, withLoop: boolean): Promise<void> {
  const fs = await statfs(options.work);
  if (MEMORY_FILESYSTEMS.has(fs.type)) {
    throw new Error(
      `${options.work} is on tmpfs/ramfs: the page cache cannot be dropped there and the ` +
        'images would sit in RAM; pass --work with a folder on a disk',
    );
  }
  const size = options.sizeBytes;
  const manifest = join(options.work, `image-${size / MiB}MiB-seed${SEED}.json`);
  // dd fills the target file and the loop backing file completely; the raw image and both
  // compressed forms each hold about the random share of the image.
  const imagesNeeded = existsSync(manifest) ? 0 : 3 * RANDOM_FRACTION * size * 1.05;
  const needed = size + (withLoop ? size + LOOP_SLACK : 0) + imagesNeeded + 64 * MiB;
  const free = fs.bavail * fs.bsize;
  if (free < needed) {
    throw new Error(
      `not enough free space in ${options.work}: ${(free / GiB).toFixed(1)} GiB free, about ` +
        `${(needed / GiB).toFixed(1)} GiB needed for a ${(size / GiB).toFixed(2)} GiB image; ` +
        'free some space, pass a smaller --size, or --work on a bigger disk',
    );
  }
}

async function machineInfo(): Promise<MachineInfo> {
  const nproc = Number((await run('nproc')).stdout.trim());
  const free = (await run('free', ['-g'])).stdout;
  const memoryGiB = Number(/^Mem:\s+(\d+)/m.exec(free)?.[1] ?? 0);
  const cpuinfo = await readFile('/proc/cpuinfo', 'utf8').catch(() => '');
  const cpu = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1]?.trim() ?? 'unknown CPU';
  return { nproc, memoryGiB, cpu, kernel: release(), arch: arch() === 'x64' ? 'x86_64' : arch() };
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

interface Timing {
  seconds: number;
  rssKiB: number;
}

/**
 * Runs `argv` under `/usr/bin/time -f '%e %M'`: wall seconds and the peak RSS (KiB) of the
 * largest process it waited for, children of a `bash -c` pipeline included.
 */
async function timed(argv: string[], timeFile: string): Promise<Timing> {
  const child = spawn(TIME, ['-o', timeFile, '-f', '%e %M', ...argv], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, LC_ALL: 'C' },
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-4000);
  });
  const code = await new Promise<number | null>((done, fail) => {
    child.once('error', fail);
    child.once('close', done);
  });
  const lines = (await readFile(timeFile, 'utf8')).trim().split('\n');
  const [wall, rss] = (lines.at(-1) ?? '').split(' ').map(Number);
  if (code !== 0 || wall === undefined || rss === undefined || Number.isNaN(wall + rss)) {
    const last = stderr.trim().split('\n').slice(-3).join(' / ');
    throw new Error(`${argv[0]} exited with ${code}: ${last || lines.join(' ')}`);
  }
  return { seconds: wall, rssKiB: rss };
}

async function dropCaches(notes: string[]): Promise<void> {
  await run('sync');
  try {
    await writeFile('/proc/sys/vm/drop_caches', '3');
  } catch (err) {
    const note = `could not drop the page cache (${(err as Error).message}): sources may be read warm`;
    if (!notes.includes(note)) notes.push(note);
  }
}

function commandFor(
  name: ContenderName,
  format: BenchFormat,
  images: Images,
  target: string,
): string[] {
  const src = images.source[format];
  const ddSink = 'dd of="$2" bs=4M oflag=direct conv=fsync';
  switch (name) {
    case 'ours':
      return [BTY, 'flash', src, target, '--yes'];
    case 'bmaptool':
      return ['bmaptool', 'copy', '--bmap', images.bmap, src, target];
    case 'dd':
      if (format === 'raw') {
        return ['dd', `if=${src}`, `of=${target}`, 'bs=4M', 'oflag=direct', 'conv=fsync'];
      }
      return [
        'bash',
        '-c',
        `set -o pipefail; ${format === 'gz' ? 'gzip' : 'zstd'} -dc "$1" | ${ddSink}`,
        'bash',
        src,
        target,
      ];
  }
}

/** How the command reads in the report: the pipeline as written, paths relative to the work dir. */
function displayCommand(argv: string[], work: string): string {
  const shown =
    argv[0] === 'bash'
      ? (argv[2] ?? '')
          .replace('set -o pipefail; ', '')
          .replace('"$1"', argv[4] ?? '')
          .replace('"$2"', argv[5] ?? '')
      : argv.join(' ');
  return shown.replaceAll(`${work}/`, '').replaceAll(`${REPO}/`, '');
}

/** Writes a non-zero pattern over stripes of the device, most of which land in zero ranges. */
async function poisonStripes(device: string, sizeBytes: number): Promise<void> {
  const stripe = Buffer.alloc(256 * KiB, 0xa5);
  const file = await open(device, 'r+');
  try {
    for (let offset = 2 * MiB; offset + stripe.length <= sizeBytes - MiB; offset += 16 * MiB) {
      await file.write(stripe, 0, stripe.length, offset);
    }
    await file.sync();
  } finally {
    await file.close();
  }
}

interface Setup {
  options: Options;
  images: Images;
  loop: LoopDevice | null;
  notes: string[];
}

function targetPath(setup: Setup, target: BenchTarget): string {
  return target === 'file' ? join(setup.options.work, 'target.img') : (setup.loop?.path ?? '');
}

/**
 * Every contender starts from the same empty target with a cold page cache, then (unless
 * --cold) with the source read once: the image arrives as fast as the machine can deliver it,
 * so what is timed is the flash tool, not the disk the image happens to sit on.
 */
async function resetTarget(
  setup: Setup,
  target: BenchTarget,
  source: string | null,
  programs: string[][] = [],
): Promise<void> {
  if (target === 'file') await rm(targetPath(setup, 'file'), { force: true });
  // Discarding punches the loop's backing file back to holes: nobody inherits allocated blocks.
  else await run('blkdiscard', ['--force', targetPath(setup, 'loop')]);
  await dropCaches(setup.notes);
  if (source !== null && !setup.options.cold)
    await run('bash', ['-c', 'cat "$1" > /dev/null', '-', source]);
  // The contender's own program was just dropped from the page cache too; start it once so
  // what is timed is a flash, not loading Node or Python from disk (decision 12).
  for (const argv of programs) await run(argv[0]!, argv.slice(1));
}

/** Commands that load a contender's programs without doing anything. */
function warmUpFor(name: ContenderName, format: BenchFormat): string[][] {
  switch (name) {
    case 'ours':
      return [[BTY, '--version']];
    case 'bmaptool':
      return [['bmaptool', '--version']];
    case 'dd':
      if (format === 'raw') return [['dd', '--version']];
      return [
        ['bash', '--version'],
        [format === 'gz' ? 'gzip' : 'zstd', '--version'],
        ['dd', '--version'],
      ];
  }
}

async function targetMatches(setup: Setup, target: BenchTarget): Promise<boolean> {
  const digest = await sha256File(targetPath(setup, target), { length: setup.options.sizeBytes });
  return digest === setup.images.sha256;
}

async function measureConfig(
  setup: Setup,
  format: BenchFormat,
  target: BenchTarget,
): Promise<ConfigResult> {
  const { options, images } = setup;
  const names: ContenderName[] = ['ours', 'dd', 'bmaptool'];
  const dest = targetPath(setup, target);
  const contenders: ContenderResult[] = names.map((name) => ({
    name,
    command: displayCommand(commandFor(name, format, images, dest), options.work),
    seconds: [],
    peakRssKiB: null,
    check: 'not checked',
    failure: null,
  }));
  const timeFile = join(options.work, 'time.out');
  for (let i = 0; i < options.runs; i++) {
    // Interleaved (ours, peer, bmaptool, ours, ...) so machine noise spreads over everyone.
    for (const c of contenders) {
      if (c.failure !== null) continue;
      await resetTarget(setup, target, images.source[format], warmUpFor(c.name, format));
      log(`${format} -> ${target}: run ${i + 1}/${options.runs} of ${c.name}`);
      try {
        const t = await timed(commandFor(c.name, format, images, dest), timeFile);
        c.seconds.push(t.seconds);
        c.peakRssKiB = Math.max(c.peakRssKiB ?? 0, t.rssKiB);
      } catch (err) {
        c.failure = (err as Error).message;
        continue;
      }
      // Ours after every run; a peer once, so a broken baseline is noticed.
      if (c.name === 'ours' || i === 0) {
        const ok = await targetMatches(setup, target);
        const checked = c.name === 'ours' ? `${i + 1}/${options.runs}` : '1 run';
        if (!ok) c.check = `MISMATCH (sha256 differs, run ${i + 1})`;
        else if (!c.check.startsWith('MISMATCH')) c.check = `ok (${checked})`;
      }
    }
  }
  if (target === 'loop') await checkStaleData(setup, format, contenders);
  const config: ConfigResult = { format, target, contenders, verdicts: [] };
  config.verdicts = judge(config);
  return config;
}

/**
 * Untimed: a real disk holds old data. With stripes of a pattern on the device, does the result
 * still read back as the image? (dd writes every byte, so only the sparse writers are asked.)
 */
async function checkStaleData(
  setup: Setup,
  format: BenchFormat,
  contenders: ContenderResult[],
): Promise<void> {
  for (const c of contenders) {
    if (c.name === 'dd' || c.failure !== null) continue;
    await resetTarget(setup, 'loop', null);
    await poisonStripes(targetPath(setup, 'loop'), setup.options.sizeBytes);
    await dropCaches(setup.notes);
    log(`${format} -> loop: stale-data check of ${c.name}`);
    try {
      await timed(
        commandFor(c.name, format, setup.images, targetPath(setup, 'loop')),
        join(setup.options.work, 'time.out'),
      );
      c.zeroesStaleData = await targetMatches(setup, 'loop');
    } catch (err) {
      c.failure = `stale-data run: ${(err as Error).message}`;
    }
  }
}

async function toolMissing(command: string): Promise<boolean> {
  return run('bash', ['-c', `command -v ${command}`]).then(
    () => false,
    () => true,
  );
}

async function benchmark(options: Options): Promise<number> {
  if (!existsSync(join(REPO, 'dist', 'src', 'cli', 'bin.js'))) {
    throw new Error("bty is not built: run 'make build' (make bench does it)");
  }
  if (!existsSync(TIME)) {
    throw new Error(`${TIME} is missing: install the Debian package time (make deps-bench)`);
  }
  for (const tool of ['bmaptool', 'gzip', 'zstd', 'dd', 'blkdiscard']) {
    if (await toolMissing(tool)) {
      throw new Error(`${tool} is not installed; run 'make deps-bench' (Debian packages)`);
    }
  }
  const notes: string[] = [];
  const withLoop = isRoot();
  if (!withLoop) notes.push('not root: no loop-device target, and the page cache was not dropped');
  await mkdir(options.work, { recursive: true });
  await checkWorkDir(options, withLoop);

  const machine = await machineInfo();
  const images = await prepareImages(options.work, options.sizeBytes);
  const loop = withLoop
    ? await createLoopDevice({
        sizeBytes: options.sizeBytes + LOOP_SLACK,
        backingDir: options.work,
      })
    : null;
  const setup: Setup = { options, images, loop, notes };
  const detachOnSignal = () => {
    void (loop?.detach() ?? Promise.resolve()).finally(() => process.exit(130));
  };
  process.once('SIGINT', detachOnSignal);
  process.once('SIGTERM', detachOnSignal);

  const configs: ConfigResult[] = [];
  try {
    for (const format of options.formats) {
      configs.push(await measureConfig(setup, format, 'file'));
      if (loop) configs.push(await measureConfig(setup, format, 'loop'));
    }
  } finally {
    await loop?.detach();
    if (!options.keep) await rm(targetPath(setup, 'file'), { force: true });
    await rm(join(options.work, 'time.out'), { force: true });
  }

  const report: BenchReport = {
    date: new Date().toISOString().slice(0, 10),
    machine,
    imageBytes: options.sizeBytes,
    randomFraction: RANDOM_FRACTION,
    seed: SEED,
    runs: options.runs,
    coldSource: options.cold,
    sourceBytes: images.sourceBytes,
    notes,
    configs,
  };
  process.stdout.write(renderText(report));
  if (options.json) await writeFile(options.json, JSON.stringify(report, null, 2) + '\n');
  if (options.updateDocs) {
    await updateDocs(join(REPO, 'docs', 'performance.md'), report);
    log('docs/performance.md updated');
  }
  const broken = configs.flatMap((c) =>
    c.contenders.filter((x) => x.failure !== null || x.check.startsWith('MISMATCH')),
  );
  if (broken.length > 0) {
    log(`FAILED: ${broken.length} contender(s) failed or wrote a wrong result (see the tables)`);
    return 1;
  }
  return 0;
}

process.exitCode = await runBench(USAGE, parseOptions, benchmark);
