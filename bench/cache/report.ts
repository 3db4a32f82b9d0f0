/**
 * What the cache benchmark measured, judged against the issue's target, and shown as a terminal
 * table and as the generated image-serving section of docs/performance.md.
 */
import { replaceDocsSection } from '../docs-section.ts';
import { renderTable } from '../../src/cli/output.ts';
import type { Round } from './clients.ts';

export type ContenderId = 'nginx' | 'bty-web';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

/** One round of one contender, as the report keeps it. */
export interface RoundResult {
  wallSeconds: number;
  /** Bytes all clients received. */
  bytes: number;
  /** Aggregate throughput: bytes over the round's wall time. */
  gibPerSecond: number;
  /** Downloads that were not a 200 with exactly the image's size, and why. */
  failures: string[];
  clientCpuSeconds: number;
  serverCpuSeconds: number;
}

export interface ContenderResult {
  id: ContenderId;
  /** What served the bytes, for the reader. */
  serves: string;
  rounds: RoundResult[];
  /** The sha256 check of one download (after the rounds' warm-up download). */
  check: string;
  checkOk: boolean;
}

export interface TargetVerdict {
  goal: string;
  pass: boolean;
  detail: string;
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
  versions: { node: string; curl: string; nginx: string; btyWeb: string };
  imageBytes: number;
  clients: number;
  runs: number;
  /** bty-web's cache mode and how long filling its cache took. */
  cache: { mode: string; fillSeconds: number } | null;
  contenders: ContenderResult[];
  verdicts: TargetVerdict[];
  notes: string[];
}

/** bty-web must reach this share of nginx's throughput. */
export const TARGET_SHARE = 0.8;

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? null)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** A round as the report keeps it; a download counts as failed unless it is a whole 200. */
export function roundResult(
  round: Round,
  imageBytes: number,
  serverCpuSeconds: number,
): RoundResult {
  const bytes = round.downloads.reduce((a, d) => a + d.bytes, 0);
  const failures = round.downloads
    .filter((d) => d.error !== null || d.status !== 200 || d.bytes !== imageBytes)
    .map((d) => d.error ?? `HTTP ${d.status}, ${d.bytes} of ${imageBytes} bytes`);
  return {
    wallSeconds: round.wallSeconds,
    bytes,
    gibPerSecond: round.wallSeconds > 0 ? bytes / GiB / round.wallSeconds : 0,
    failures,
    clientCpuSeconds: round.downloads.reduce((a, d) => a + d.cpuSeconds, 0),
    serverCpuSeconds,
  };
}

const find = (report: Pick<BenchReport, 'contenders'>, id: ContenderId) =>
  report.contenders.find((c) => c.id === id);

export const throughputOf = (c: ContenderResult | undefined): number | null =>
  c ? median(c.rounds.map((r) => r.gibPerSecond)) : null;

/** bty-web's median throughput over nginx's. */
export function shareOfNginx(report: Pick<BenchReport, 'contenders'>): number | null {
  const ours = throughputOf(find(report, 'bty-web'));
  const theirs = throughputOf(find(report, 'nginx'));
  return ours === null || theirs === null || theirs === 0 ? null : ours / theirs;
}

const pct = (x: number) => `${(x * 100).toFixed(0)} %`;
const gib = (x: number | null) => (x === null ? '-' : x.toFixed(2));

/** The issue's target, and the correctness every figure rests on. */
export function judge(report: Omit<BenchReport, 'verdicts'>): TargetVerdict[] {
  const verdicts: TargetVerdict[] = [];
  const downloads = report.contenders.reduce((a, c) => a + c.rounds.length * report.clients, 0);
  const failures = report.contenders.flatMap((c) => c.rounds.flatMap((r) => r.failures));
  verdicts.push({
    goal: 'every download a 200 with the whole image',
    pass: failures.length === 0 && downloads > 0,
    detail:
      failures.length === 0
        ? `${downloads} downloads`
        : `${failures.length} of ${downloads} failed: ${[...new Set(failures)].slice(0, 3).join('; ')}`,
  });
  for (const c of report.contenders) {
    verdicts.push({ goal: `${c.id}: sha256 of a download`, pass: c.checkOk, detail: c.check });
  }
  if (find(report, 'bty-web') && find(report, 'nginx')) {
    const share = shareOfNginx(report);
    verdicts.push({
      goal: `bty-web >= ${pct(TARGET_SHARE)} of nginx's throughput`,
      pass: share !== null && share >= TARGET_SHARE,
      detail:
        share === null
          ? 'no figure'
          : `${gib(throughputOf(find(report, 'bty-web')))} vs ` +
            `${gib(throughputOf(find(report, 'nginx')))} GiB/s: ${pct(share)}`,
    });
  }
  return verdicts;
}

const HEADERS = [
  'server',
  'serves',
  'median GiB/s',
  'runs GiB/s',
  'vs nginx',
  'server CPU s/GiB',
  'client CPU s/GiB',
  'check',
];

function perGiB(rounds: RoundResult[], pick: (r: RoundResult) => number): string {
  const values = rounds.filter((r) => r.bytes > 0).map((r) => pick(r) / (r.bytes / GiB));
  const m = median(values);
  return m === null ? '-' : m.toFixed(2);
}

function rowsOf(report: BenchReport): string[][] {
  const share = shareOfNginx(report);
  return report.contenders.map((c) => [
    c.id,
    c.serves,
    gib(throughputOf(c)),
    c.rounds.map((r) => r.gibPerSecond.toFixed(2)).join(' '),
    c.id === 'nginx' || share === null ? '-' : pct(share),
    perGiB(c.rounds, (r) => r.serverCpuSeconds),
    perGiB(c.rounds, (r) => r.clientCpuSeconds),
    c.check,
  ]);
}

function verdictText(v: TargetVerdict): string {
  return `${v.pass ? 'PASS' : 'MISS'} ${v.goal} (${v.detail})`;
}

function settingsText(report: BenchReport): string {
  const size =
    report.imageBytes % GiB === 0
      ? `${report.imageBytes / GiB} GiB`
      : `${(report.imageBytes / MiB).toFixed(0)} MiB`;
  const cache = report.cache
    ? `; bty-web's cache (${report.cache.mode} mode) filled from nginx in ` +
      `${report.cache.fillSeconds.toFixed(1)} s`
    : '';
  return (
    `${size} image of random bytes, ${report.clients} concurrent curl downloads of the whole ` +
    `file per round, median of ${report.runs} rounds, contenders alternating${cache}`
  );
}

/** The terminal report. */
export function renderText(report: BenchReport): string {
  const parts = [`image serving: ${settingsText(report)}\n\n`];
  parts.push(renderTable(HEADERS, rowsOf(report)));
  parts.push('\n');
  for (const v of report.verdicts) parts.push(`  ${verdictText(v)}\n`);
  const missed = report.verdicts.filter((v) => !v.pass);
  parts.push(
    missed.length === 0
      ? '\nall targets met\n'
      : `\nMISS: ${missed.length} target(s) missed:\n${missed.map((v) => `  ${verdictText(v)}\n`).join('')}`,
  );
  for (const note of report.notes) parts.push(`note: ${note}\n`);
  return parts.join('');
}

function markdownTable(headers: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

export const DOCS_BEGIN = '<!-- bench:cache:begin -->';
export const DOCS_END = '<!-- bench:cache:end -->';

/** The generated image-serving section of docs/performance.md (between the markers). */
export function renderMarkdown(report: BenchReport): string {
  const m = report.machine;
  const v = report.versions;
  const out = [
    `Run of ${report.date} on ${m.cpu}, ${m.nproc} cores (\`nproc\`), ${m.memoryGiB} GiB RAM ` +
      `(\`free -g\`), Linux ${m.kernel} ${m.arch}; Node ${v.node}, ${v.curl}, nginx ${v.nginx}, ` +
      `bty-web ${v.btyWeb}.`,
    '',
    `Settings: ${settingsText(report)}. "vs nginx" is bty-web's median throughput over ` +
      "nginx's; CPU seconds per GiB served are medians over the rounds (the server's process " +
      'tree; all curl processes together).',
    '',
    markdownTable(HEADERS, rowsOf(report)),
    '',
    ...report.verdicts.map((x) => `- ${verdictText(x)}`),
    '',
  ];
  for (const note of report.notes) out.push(`Note: ${note}`, '');
  return out.join('\n');
}

/** Replaces the generated image-serving section of `path`; the rest is left as it is. */
export async function updateDocs(path: string, report: BenchReport): Promise<void> {
  await replaceDocsSection(
    path,
    { begin: DOCS_BEGIN, end: DOCS_END, label: 'image-serving' },
    renderMarkdown(report),
  );
}
