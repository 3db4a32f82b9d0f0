/**
 * What the TFTP benchmark measured, judged against the issue's targets, and shown as a terminal
 * table per link and as the generated TFTP section of docs/performance.md.
 */
import { replaceDocsSection } from '../docs-section.ts';
import { renderTable } from '../../src/cli/output.ts';
import { optionsText, type TftpOptions } from './client.ts';
import type { LinkId } from './link.ts';

/** The cases, in the order they are reported on each link. */
export type CaseId = 'default' | 'blksize' | 'window' | 'storm' | 'storm-window';

export interface ContenderResult {
  /** `bty-tftp`, or `tftpd-hpa` for the peer (and for "ours" when checking the harness). */
  server: string;
  /**
   * Per run: each sequential fetch's wall time, or for a concurrent case the one wall time from
   * the first client started to the last one finished, in milliseconds.
   */
  runsMs: number[][];
  /** What the server's OACK granted for these options (atftp's trace), null for plain DATA. */
  granted: string | null;
  fetches: number;
  /** Fetches whose file had the right sha256. */
  intact: number;
  failures: string[];
}

export interface CaseResult {
  link: LinkId;
  id: CaseId;
  title: string;
  options: TftpOptions;
  /** Clients at once: 1 for the sequential cases. */
  clients: number;
  ours: ContenderResult;
  theirs: ContenderResult;
  /** The issue's target for this case: equal options (>= 1x) or windowsize (>= 3x). */
  target: 'equal' | 'window' | null;
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

export interface LinkInfo {
  id: LinkId;
  title: string;
  /** The netem delay on each end in place (0: none added). */
  delayMs: number;
  /** Median of starting atftp (`--version`) through the link's client prefix: in every time. */
  clientStartMs: number;
}

export interface BenchReport {
  date: string;
  machine: MachineInfo;
  versions: { node: string; atftp: string; tftpdHpa: string; bty: string };
  file: { path: string; bytes: number; sha256: string };
  settings: {
    fetches: number;
    clients: number;
    runs: number;
    warmup: number;
    blksize: number;
    windowsize: number;
    delayMs: number;
    ours: string;
  };
  links: LinkInfo[];
  cases: CaseResult[];
  verdicts: TargetVerdict[];
  notes: string[];
}

export const TARGET_EQUAL = 1;
export const TARGET_WINDOW = 3;

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? null)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** The median over every sample of every run. */
export const medianMs = (c: ContenderResult) => median(c.runsMs.flat());

/** Our throughput over theirs (their median time over ours): above 1 means bty-tftp is faster. */
export function ratio(c: CaseResult): number | null {
  const ours = medianMs(c.ours);
  const theirs = medianMs(c.theirs);
  if (ours === null || theirs === null || ours === 0) return null;
  return theirs / ours;
}

/** Megabytes (10^6) per second moved by the clients of one sample. */
export function throughput(c: CaseResult, ms: number | null, bytes: number): number | null {
  return ms === null || ms <= 0 ? null : (bytes * c.clients) / 1e6 / (ms / 1000);
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const msText = (n: number | null) =>
  n === null ? '-' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : int(n);
const x = (n: number | null) => (n === null ? 'no figure' : `${n.toFixed(2)}x`);

/** The issue's targets, from the medians; plus: every fetched file intact. */
export function judge(report: Omit<BenchReport, 'verdicts'>): TargetVerdict[] {
  const verdicts: TargetVerdict[] = [];
  for (const c of report.cases) {
    if (c.target === null) continue;
    const r = ratio(c);
    const where = `${c.link}, ${c.title}`;
    if (c.target === 'equal') {
      verdicts.push({
        goal: `${where}: no slower than tftpd-hpa`,
        pass: r !== null && r >= TARGET_EQUAL,
        detail: x(r),
      });
    } else {
      verdicts.push({
        goal: `${where}: >= ${TARGET_WINDOW}x faster than tftpd-hpa`,
        pass: r !== null && r >= TARGET_WINDOW,
        detail: x(r),
      });
    }
  }
  const all = report.cases.flatMap((c) => [c.ours, c.theirs]);
  const fetches = all.reduce((a, c) => a + c.fetches, 0);
  const intact = all.reduce((a, c) => a + c.intact, 0);
  const failed = all.reduce((a, c) => a + c.failures.length, 0);
  verdicts.push({
    goal: 'every fetched file intact (sha256)',
    pass: fetches > 0 && intact === fetches && failed === 0,
    detail: `${int(intact)} of ${int(fetches)} fetches, ${failed} failed`,
  });
  return verdicts;
}

const HEADERS = ['case', 'server', 'OACK', 'median ms', 'runs ms', 'MB/s', 'vs tftpd-hpa', 'check'];

function checkText(c: ContenderResult): string {
  const base =
    c.intact === c.fetches && c.failures.length === 0
      ? `ok (${int(c.fetches)})`
      : `BAD: ${c.intact}/${c.fetches} intact`;
  return c.failures.length > 0 ? `${base}; ${c.failures.length} failed` : base;
}

function rowsOf(report: BenchReport, link: LinkId): string[][] {
  const rows: string[][] = [];
  for (const c of report.cases.filter((k) => k.link === link)) {
    for (const [who, k] of [
      ['ours', c.ours],
      ['theirs', c.theirs],
    ] as const) {
      const m = medianMs(k);
      const mbps = throughput(c, m, report.file.bytes);
      rows.push([
        who === 'ours' ? c.title : '',
        k.server,
        k.granted === null ? '(none)' : k.granted,
        msText(m),
        k.runsMs.map((r) => msText(median(r))).join(' '),
        mbps === null ? '-' : mbps.toFixed(1),
        who === 'ours' ? (ratio(c) === null ? '-' : x(ratio(c))) : '-',
        checkText(k),
      ]);
    }
  }
  return rows;
}

function verdictText(v: TargetVerdict): string {
  return `${v.pass ? 'PASS' : 'MISS'} ${v.goal} (${v.detail})`;
}

function settingsText(report: BenchReport): string {
  const s = report.settings;
  const f = report.file;
  return (
    `${f.path} (${int(f.bytes)} bytes), fetched by atftp; ${int(s.fetches)} sequential fetches ` +
    `per case and ${s.clients} clients at once for the concurrent cases, in each of ${s.runs} ` +
    `run(s), the two servers alternating (which goes first swaps every run), after ` +
    `${s.warmup} untimed fetches per server and link. Times are per fetch (per burst for the ` +
    `concurrent cases), from starting atftp to its exit; MB/s is the file's bytes (times the ` +
    `clients) over the median time. "vs tftpd-hpa" is tftpd-hpa's median time over ours: above ` +
    `1 means ${s.ours} is faster. OACK is what each server granted for the options sent.`
  );
}

function linkLine(l: LinkInfo): string {
  return `${l.title} (starting atftp there takes ${msText(l.clientStartMs)} ms, included in every time)`;
}

function optionsLines(report: BenchReport): string[] {
  const seen = new Set<string>();
  const lines: string[] = [];
  for (const c of report.cases) {
    if (seen.has(c.id)) continue;
    seen.add(c.id);
    const who = c.clients > 1 ? `${c.clients} clients at once` : 'one client at a time';
    lines.push(`${c.title}: ${who}, options sent: ${optionsText(c.options)}`);
  }
  return lines;
}

/** The terminal report. */
export function renderText(report: BenchReport): string {
  const parts = [`TFTP: ${report.settings.ours} vs tftpd-hpa. ${settingsText(report)}\n`];
  for (const line of optionsLines(report)) parts.push(`  ${line}\n`);
  for (const l of report.links) {
    parts.push(`\n== ${linkLine(l)}\n`);
    parts.push(renderTable(HEADERS, rowsOf(report, l.id)));
  }
  parts.push('\n');
  for (const v of report.verdicts) parts.push(`  ${verdictText(v)}\n`);
  for (const c of report.cases) {
    for (const k of [c.ours, c.theirs]) {
      for (const f of k.failures.slice(0, 3))
        parts.push(`  ${c.link}, ${c.title}, ${k.server}: ${f}\n`);
    }
  }
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

export const DOCS_BEGIN = '<!-- bench:tftp:begin -->';
export const DOCS_END = '<!-- bench:tftp:end -->';

/** The generated TFTP section of docs/performance.md (between the markers). */
export function renderMarkdown(report: BenchReport): string {
  const m = report.machine;
  const v = report.versions;
  const out = [
    `Run of ${report.date} on ${m.cpu}, ${m.nproc} cores (\`nproc\`), ${m.memoryGiB} GiB RAM ` +
      `(\`free -g\`), Linux ${m.kernel} ${m.arch}; Node ${v.node}, ${v.atftp}, ${v.tftpdHpa}, ` +
      `bty ${v.bty}.`,
    '',
    `Settings: ${settingsText(report)}`,
    '',
    ...optionsLines(report).map((line) => `- ${line}`),
    '',
  ];
  for (const l of report.links) {
    out.push(`#### ${linkLine(l)}`, '', markdownTable(HEADERS, rowsOf(report, l.id)), '');
  }
  out.push(...report.verdicts.map((x) => `- ${verdictText(x)}`), '');
  for (const note of report.notes) out.push(`Note: ${note}`, '');
  return out.join('\n');
}

/** Replaces the generated TFTP section of `path`; the rest of the file is left as it is. */
export async function updateDocs(path: string, report: BenchReport): Promise<void> {
  await replaceDocsSection(
    path,
    { begin: DOCS_BEGIN, end: DOCS_END, label: 'TFTP' },
    renderMarkdown(report),
  );
}
