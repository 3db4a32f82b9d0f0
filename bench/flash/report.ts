/**
 * What the flash benchmark measured, judged against the issue's targets, and shown as a terminal
 * table and as the generated section of docs/performance.md.
 */
import { replaceDocsSection } from '../docs-section.ts';
import { renderTable } from '../../src/cli/output.ts';

export type BenchFormat = 'raw' | 'gz' | 'zst';
export type BenchTarget = 'file' | 'loop';
export type ContenderName = 'ours' | 'dd' | 'bmaptool';

export interface ContenderResult {
  name: ContenderName;
  /** What was run, with the work-dir paths shortened, for the reader. */
  command: string;
  /** Wall seconds of each successful run, in run order. */
  seconds: number[];
  peakRssKiB: number | null;
  /** 'ok', 'MISMATCH …', or 'not checked'; ours is checked after every run, peers once. */
  check: string;
  /** Why the contender could not run, when it could not. */
  failure: string | null;
  /** Loop target only: whether stale data in the zero ranges was overwritten (untimed check). */
  zeroesStaleData?: boolean;
}

export interface TargetVerdict {
  goal: string;
  pass: boolean;
  detail: string;
}

export interface ConfigResult {
  format: BenchFormat;
  target: BenchTarget;
  contenders: ContenderResult[];
  verdicts: TargetVerdict[];
}

export interface MachineInfo {
  nproc: number;
  memoryGiB: number;
  cpu: string;
  kernel: string;
  arch: string;
}

export interface BenchReport {
  date: string;
  machine: MachineInfo;
  imageBytes: number;
  randomFraction: number;
  seed: number;
  runs: number;
  /** True when the source was left cold too (--cold); else it was read once before each run. */
  coldSource: boolean;
  sourceBytes: Record<BenchFormat, number>;
  notes: string[];
  configs: ConfigResult[];
}

/** "Under 200 MB", read as decimal megabytes: the stricter reading. */
export const RSS_LIMIT_BYTES = 200e6;

const MiB = 1024 * 1024;

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? null)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** Peer median over ours: above 1 means we are faster. */
export function ratioToOurs(config: ConfigResult, peer: ContenderName): number | null {
  const ours = median(find(config, 'ours')?.seconds ?? []);
  const theirs = median(find(config, peer)?.seconds ?? []);
  if (ours === null || theirs === null || ours === 0) return null;
  return theirs / ours;
}

function find(config: ConfigResult, name: ContenderName): ContenderResult | undefined {
  return config.contenders.find((c) => c.name === name);
}

/** The issue's targets for one (format, target) configuration. */
export function judge(config: ConfigResult): TargetVerdict[] {
  const verdicts: TargetVerdict[] = [];
  const vsPeer = ratioToOurs(config, 'dd');
  const vsBmap = ratioToOurs(config, 'bmaptool');
  const ratioVerdict = (goal: string, ratio: number | null, needed: number): TargetVerdict => ({
    goal,
    pass: ratio !== null && ratio >= needed,
    detail: ratio === null ? 'no figure' : `${ratio.toFixed(2)}x`,
  });
  if (config.format === 'gz') {
    verdicts.push(ratioVerdict('no slower than gzip -dc | dd', vsPeer, 1));
  } else {
    const peer = config.format === 'raw' ? 'dd' : 'zstd -dc | dd';
    verdicts.push(ratioVerdict(`>= 2x faster than ${peer}`, vsPeer, 2));
    verdicts.push(ratioVerdict('at least as fast as bmaptool', vsBmap, 1));
  }
  const rss = find(config, 'ours')?.peakRssKiB ?? null;
  verdicts.push({
    goal: 'peak RSS < 200 MB',
    pass: rss !== null && rss * 1024 < RSS_LIMIT_BYTES,
    detail: rss === null ? 'no figure' : `${(rss / 1024).toFixed(0)} MiB`,
  });
  return verdicts;
}

export function configTitle(config: ConfigResult): string {
  const source = config.format === 'raw' ? '.img' : `.img.${config.format}`;
  return `${source} -> ${config.target === 'file' ? 'regular file' : 'loop device'}`;
}

export function contenderLabel(config: ConfigResult, name: ContenderName): string {
  if (name === 'ours') return 'bty flash';
  if (name === 'bmaptool') return 'bmaptool copy';
  return config.format === 'raw' ? 'dd' : `${config.format === 'gz' ? 'gzip' : 'zstd'} -dc | dd`;
}

function seconds(value: number | null): string {
  return value === null ? '-' : value.toFixed(2);
}

function rssText(kib: number | null): string {
  return kib === null ? '-' : `${(kib / 1024).toFixed(0)} MiB`;
}

function rowsOf(config: ConfigResult): string[][] {
  return config.contenders.map((c) => {
    const ratio = c.name === 'ours' ? null : ratioToOurs(config, c.name);
    const check =
      c.zeroesStaleData === undefined
        ? c.check
        : `${c.check}; stale data ${c.zeroesStaleData ? 'zeroed' : 'LEFT in unmapped ranges'}`;
    return [
      contenderLabel(config, c.name),
      c.failure === null ? seconds(median(c.seconds)) : 'failed',
      c.seconds.map((s) => s.toFixed(2)).join(' '),
      c.name === 'ours' ? '-' : ratio === null ? '-' : `${ratio.toFixed(2)}x`,
      rssText(c.peakRssKiB),
      c.failure === null ? check : `could not run: ${c.failure}`,
    ];
  });
}

const HEADERS = ['contender', 'median s', 'runs s', 'peer/ours', 'peak RSS', 'check'];

function verdictText(v: TargetVerdict): string {
  return `${v.pass ? 'PASS' : 'MISS'} ${v.goal} (${v.detail})`;
}

/** The terminal report: one table per configuration, then its verdicts. */
export function renderText(report: BenchReport): string {
  const parts = [
    `bty flash benchmark: ${(report.imageBytes / MiB).toFixed(0)} MiB image ` +
      `(${Math.round(report.randomFraction * 100)} % random), median of ${report.runs} run(s); ` +
      'peer/ours > 1 means bty is faster\n',
  ];
  for (const config of report.configs) {
    parts.push(`\n== ${configTitle(config)}\n`);
    parts.push(renderTable(HEADERS, rowsOf(config)));
    for (const v of config.verdicts) parts.push(`  ${verdictText(v)}\n`);
  }
  const missed = report.configs.flatMap((c) =>
    c.verdicts.filter((v) => !v.pass).map((v) => `${configTitle(c)}: ${v.goal} (${v.detail})`),
  );
  parts.push(
    missed.length === 0
      ? '\nall targets met\n'
      : `\nMISS: ${missed.length} target(s) missed:\n${missed.map((m) => `  MISS ${m}\n`).join('')}`,
  );
  for (const note of report.notes) parts.push(`note: ${note}\n`);
  return parts.join('');
}

function markdownTable(headers: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

export const DOCS_BEGIN =
  '<!-- bench:flash:begin (generated by `make bench BENCH_ARGS=--update-docs`) -->';
export const DOCS_END = '<!-- bench:flash:end -->';

/** The generated figures section of docs/performance.md (between the markers). */
export function renderMarkdown(report: BenchReport): string {
  const m = report.machine;
  const source = (f: BenchFormat) => `${(report.sourceBytes[f] / MiB).toFixed(0)} MiB`;
  const out = [
    `Run of ${report.date} on ${m.cpu}, ${m.nproc} cores (\`nproc\`), ${m.memoryGiB} GiB RAM ` +
      `(\`free -g\`), Linux ${m.kernel} ${m.arch}.`,
    '',
    `Image: ${(report.imageBytes / MiB).toFixed(0)} MiB raw, ` +
      `${Math.round(report.randomFraction * 100)} % random data in runs and the rest zeros ` +
      `(seed ${report.seed}); .img.gz ${source('gz')} (gzip -6), .img.zst ${source('zst')} ` +
      `(zstd -3). Median of ${report.runs} runs, contenders interleaved, page cache dropped ` +
      (report.coldSource
        ? 'before every run, source left cold. '
        : 'before every run, then the source read once (warm source, cold target). ') +
      'peer/ours above 1 means bty is faster.',
    '',
  ];
  for (const config of report.configs) {
    out.push(`### ${configTitle(config)}`, '');
    out.push(markdownTable(HEADERS, rowsOf(config)), '');
    for (const v of config.verdicts) out.push(`- ${verdictText(v)}`);
    out.push('');
  }
  for (const note of report.notes) out.push(`Note: ${note}`, '');
  return out.join('\n');
}

const DOCS_SKELETON = `# Performance

Figures from \`make bench\` (bench/flash/run.ts).

${DOCS_BEGIN}
${DOCS_END}
`;

/** Replaces the generated section of `path` (created from a skeleton if missing). */
export async function updateDocs(path: string, report: BenchReport): Promise<void> {
  await replaceDocsSection(
    path,
    { begin: DOCS_BEGIN, end: DOCS_END, label: 'flash', skeleton: DOCS_SKELETON },
    renderMarkdown(report),
  );
}
