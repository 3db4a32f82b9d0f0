/**
 * What the PXE benchmark measured, judged against the issue's targets, and shown as a terminal
 * table and as the generated PXE section of docs/performance.md.
 */
import { replaceDocsSection } from '../docs-section.ts';
import { renderTable } from '../../src/cli/output.ts';
import type { FleetCheck } from './fleet.ts';
import type { ProfileShare, ProfileSummary } from './profile.ts';
import type { WrkResult } from './wrk.ts';

/** The loads, in the order they are reported. */
export type ScenarioId = 'nginx-random' | 'fresh' | 'few' | 'many' | 'nginx-repeat' | 'repeat';

export interface LoadRun {
  requests: number;
  received: number;
  /** Answers outside 2xx. */
  non2xx: number;
  /** Connect, read and write errors, and answers slower than wrk's timeout. */
  socketErrors: number;
  /** Requests of the load that got no answer (lost, or never sent before the time limit). */
  unanswered: number;
  requestsPerSecond: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  maxMs: number;
  wallMs: number;
  statuses: Record<string, number>;
}

export interface ScenarioResult {
  id: ScenarioId;
  title: string;
  server: 'bty-web' | 'nginx';
  /** Machines in the database before the timed load (warm-up machines not included). */
  present: number | null;
  requestsPerRun: number;
  runs: LoadRun[];
  /** The nginx load this one is compared with. */
  ceiling: ScenarioId | null;
}

export interface ServerCheck {
  /** The server's loads, e.g. "10,000 present: storm + one MAC". */
  server: string;
  run: number;
  check: FleetCheck;
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

export interface BenchSettings {
  macs: number;
  present: number;
  few: number;
  repeat: number;
  connections: number;
  threads: number;
  warmup: number;
  warmupMachines: number;
  runs: number;
  requestTimeoutS: number;
}

export interface ProfiledStorm {
  /** What the database held, e.g. "empty database". */
  label: string;
  run: LoadRun;
  summary: ProfileSummary;
  /** The kept .cpuprofile, relative to the repository. */
  file: string | null;
}

export interface BenchReport {
  date: string;
  machine: MachineInfo;
  versions: { node: string; wrk: string; nginx: string; btyWeb: string };
  settings: BenchSettings;
  scenarios: ScenarioResult[];
  checks: ServerCheck[];
  verdicts: TargetVerdict[];
  /** The extra profiled storms, when --cpu-prof was given. */
  profiles: ProfiledStorm[];
  notes: string[];
}

export const TARGET_RPS = 3000;
export const TARGET_P99_MS = 50;
/** Throughput with many machines present may be at most this much below that with few. */
export const TARGET_FLEET_SLOWDOWN = 0.15;

export function median(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? (sorted[mid] ?? null)
    : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** One wrk load as the report shows it. */
export function loadRun(result: WrkResult, requests: number): LoadRun {
  const e = result.errors;
  const seconds = result.wallUs / 1e6;
  return {
    requests,
    received: result.received,
    non2xx: result.non2xx,
    socketErrors: e.connect + e.read + e.write + e.timeout,
    unanswered: Math.max(0, requests - result.received),
    requestsPerSecond: seconds > 0 ? result.received / seconds : 0,
    p50Ms: result.latencyUs.p50 / 1000,
    p90Ms: result.latencyUs.p90 / 1000,
    p99Ms: result.latencyUs.p99 / 1000,
    maxMs: result.latencyUs.max / 1000,
    wallMs: result.wallUs / 1000,
    statuses: result.statuses,
  };
}

export function errorsOf(run: LoadRun): number {
  return run.non2xx + run.socketErrors + run.unanswered;
}

const medianOf = (s: ScenarioResult, pick: (r: LoadRun) => number) => median(s.runs.map(pick));
export const rpsOf = (s: ScenarioResult | undefined) =>
  s ? medianOf(s, (r) => r.requestsPerSecond) : null;

/** Our median throughput over nginx's on the same pattern. */
export function ratioToCeiling(report: BenchReport, s: ScenarioResult): number | null {
  if (s.ceiling === null) return null;
  const ours = rpsOf(s);
  const theirs = rpsOf(report.scenarios.find((c) => c.id === s.ceiling));
  if (ours === null || theirs === null || theirs === 0) return null;
  return ours / theirs;
}

const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? '' : 's'}`;
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number | null) => (n === null ? '-' : n < 10 ? n.toFixed(2) : n.toFixed(1));

/** The issue's targets, from the medians of the runs. */
export function judge(report: Omit<BenchReport, 'verdicts'>): TargetVerdict[] {
  const find = (id: ScenarioId) => report.scenarios.find((s) => s.id === id);
  const verdicts: TargetVerdict[] = [];
  const ours = report.scenarios.filter((s) => s.server === 'bty-web');
  const runs = ours.flatMap((s) => s.runs);
  const sum = (pick: (r: LoadRun) => number) => runs.reduce((a, r) => a + pick(r), 0);
  const errors = runs.reduce((a, r) => a + errorsOf(r), 0);
  verdicts.push({
    goal: 'zero errors',
    pass: errors === 0,
    detail:
      `${int(sum((r) => r.requests))} requests to bty-web: ${sum((r) => r.non2xx)} non-2xx, ` +
      `${sum((r) => r.socketErrors)} socket errors or timeouts, ${sum((r) => r.unanswered)} unanswered`,
  });
  for (const id of ['fresh', 'many'] as const) {
    const s = find(id);
    if (!s) continue;
    const rps = rpsOf(s);
    verdicts.push({
      goal: `${s.title}: >= ${int(TARGET_RPS)} requests/s`,
      pass: rps !== null && rps >= TARGET_RPS,
      detail: rps === null ? 'no figure' : `${int(rps)}/s`,
    });
    const p99 = medianOf(s, (r) => r.p99Ms);
    verdicts.push({
      goal: `${s.title}: p99 < ${TARGET_P99_MS} ms`,
      pass: p99 !== null && p99 < TARGET_P99_MS,
      detail: p99 === null ? 'no figure' : `${ms(p99)} ms`,
    });
  }
  const many = find('many');
  const few = find('few');
  if (many && few) {
    const a = rpsOf(many);
    const b = rpsOf(few);
    const ratio = a !== null && b !== null && b > 0 ? a / b : null;
    verdicts.push({
      goal:
        `throughput with ${int(many.present ?? 0)} machines within ` +
        `${Math.round(TARGET_FLEET_SLOWDOWN * 100)} % of that with ${int(few.present ?? 0)}`,
      pass: ratio !== null && ratio >= 1 - TARGET_FLEET_SLOWDOWN,
      detail:
        ratio === null
          ? 'no figure'
          : `${int(a ?? 0)}/s vs ${int(b ?? 0)}/s: ${(ratio * 100).toFixed(0)} %`,
    });
  }
  return verdicts;
}

const HEADERS = [
  'load',
  'server',
  'requests',
  'req/s',
  'runs req/s',
  'p50 ms',
  'p99 ms',
  'errors',
  'vs nginx',
];

function rowsOf(report: BenchReport): string[][] {
  return report.scenarios.map((s) => {
    const ratio = ratioToCeiling(report, s);
    const errors = s.runs.reduce((a, r) => a + errorsOf(r), 0);
    const rps = rpsOf(s);
    return [
      s.title,
      s.server,
      int(s.requestsPerRun),
      rps === null ? '-' : int(rps),
      s.runs.map((r) => int(r.requestsPerSecond)).join(' '),
      ms(medianOf(s, (r) => r.p50Ms)),
      ms(medianOf(s, (r) => r.p99Ms)),
      String(errors),
      ratio === null ? '-' : `${(ratio * 100).toFixed(0)} %`,
    ];
  });
}

function verdictText(v: TargetVerdict): string {
  return `${v.pass ? 'PASS' : 'MISS'} ${v.goal} (${v.detail})`;
}

function checkWhat(k: FleetCheck): string {
  return (
    `${int(k.machineRows)} rows for ${int(k.expectedMachines)} MACs, ` +
    `${int(k.discoveryEvents)} discovery events, ${int(k.offerEvents)} offer events for ` +
    `${int(k.pxeRequests)} /pxe requests`
  );
}

/** One line per kind of server: the runs that passed together, each failure on its own. */
function checkLines(checks: ServerCheck[]): string[] {
  const lines: string[] = [];
  const servers = [...new Set(checks.map((c) => c.server))];
  for (const server of servers) {
    const mine = checks.filter((c) => c.server === server);
    const ok = mine.filter((c) => c.check.ok);
    const first = ok[0];
    if (first) {
      const runs = `run${ok.length > 1 ? 's' : ''} ${ok.map((c) => c.run).join(', ')}`;
      lines.push(`ok   ${server} (${runs}): ${checkWhat(first.check)}`);
    }
    for (const c of mine.filter((x) => !x.check.ok)) {
      lines.push(
        `FAIL ${server} (run ${c.run}): ${c.check.problems.join('; ')} (${checkWhat(c.check)})`,
      );
    }
  }
  return lines;
}

function settingsText(report: BenchReport): string {
  const s = report.settings;
  return (
    `${s.connections} connections, ${plural(s.threads, 'wrk thread')}, median of ` +
    `${plural(s.runs, 'run')}; ` +
    `every bty-web load on a fresh server and state folder, after ${int(s.warmup)} warm-up ` +
    `requests from ${s.warmupMachines} other machines`
  );
}

function profileText(p: ProfiledStorm): string {
  const s = p.summary;
  return (
    `${p.label}: ${int(p.run.requestsPerSecond)} req/s, ${int(s.samples)} samples over ` +
    `${int(s.windowMs)} ms` +
    (s.windowed ? '' : ' (whole process: no sample fell in the storm)')
  );
}

/** CPU time per request of the storm, in microseconds, and its share of the samples. */
function cost(p: ProfiledStorm, share: ProfileShare | undefined): string {
  if (!share) return '-';
  const perRequest = (share.selfMs * 1000) / Math.max(1, p.run.received);
  return `${int(perRequest)} µs (${(share.selfShare * 100).toFixed(1)} %)`;
}

/**
 * One row per name that is among the first `top` of some profile (and at least 0.5 % of its
 * samples), with its cost in every profile.
 */
function profileRows(
  profiles: ProfiledStorm[],
  pick: (s: ProfileSummary) => ProfileShare[],
  top: number,
): string[][] {
  const names: string[] = [];
  for (const p of profiles) {
    for (const x of pick(p.summary).slice(0, top)) {
      if (x.selfShare >= 0.005 && !names.includes(x.name)) names.push(x.name);
    }
  }
  return names.map((name) => [
    name,
    ...profiles.map((p) =>
      cost(
        p,
        pick(p.summary).find((x) => x.name === name),
      ),
    ),
  ]);
}

function profileTables(profiles: ProfiledStorm[]): {
  head: string[];
  mods: string[][];
  fns: string[][];
} {
  return {
    head: profiles.map((p) => `${p.label}: self per request`),
    mods: profileRows(profiles, (s) => s.modules, 20),
    fns: profileRows(profiles, (s) => s.functions, 10),
  };
}

/** The terminal report. */
export function renderText(report: BenchReport): string {
  const parts = [`bty-web PXE boot storm: ${settingsText(report)}\n\n`];
  parts.push(renderTable(HEADERS, rowsOf(report)));
  parts.push('\n');
  for (const v of report.verdicts) parts.push(`  ${verdictText(v)}\n`);
  parts.push('\nstate database after each server:\n');
  for (const line of checkLines(report.checks)) parts.push(`  ${line}\n`);
  if (report.profiles.length > 0) {
    const t = profileTables(report.profiles);
    parts.push(
      `\nwhere bty-web's time goes, profiled storms (${report.profiles.map(profileText).join('; ')}):\n`,
    );
    parts.push(renderTable(['module', ...t.head], t.mods));
    parts.push('\n');
    parts.push(renderTable(['function', ...t.head], t.fns));
    for (const p of report.profiles) if (p.file) parts.push(`profile kept: ${p.file}\n`);
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

export const DOCS_BEGIN = '<!-- bench:pxe:begin -->';
export const DOCS_END = '<!-- bench:pxe:end -->';

/** The generated PXE section of docs/performance.md (between the markers). */
export function renderMarkdown(report: BenchReport): string {
  const m = report.machine;
  const v = report.versions;
  const out = [
    `Run of ${report.date} on ${m.cpu}, ${m.nproc} cores (\`nproc\`), ${m.memoryGiB} GiB RAM ` +
      `(\`free -g\`), Linux ${m.kernel} ${m.arch}; Node ${v.node}, ${v.wrk}, nginx ${v.nginx}, ` +
      `bty-web ${v.btyWeb}.`,
    '',
    `Settings: ${settingsText(report)}. Latencies are wrk's; "errors" counts non-2xx answers, ` +
      `socket errors, answers slower than ${report.settings.requestTimeoutS} s and requests ` +
      'never answered; "vs nginx" is bty-web\'s median throughput over nginx\'s on the same ' +
      'request pattern.',
    '',
    markdownTable(HEADERS, rowsOf(report)),
    '',
    ...report.verdicts.map((x) => `- ${verdictText(x)}`),
    '',
    'The state database after each server run (read with `node:sqlite` once the server had ' +
      'stopped):',
    '',
    ...checkLines(report.checks).map((line) => `- ${line}`),
    '',
  ];
  if (report.profiles.length > 0) {
    const t = profileTables(report.profiles);
    out.push(
      "Where bty-web's time goes: one more storm against each of two servers running under " +
        `\`--cpu-prof\` (${report.profiles.map(profileText).join('; ')}). Self time per ` +
        'request of the storm (and its share of the samples), by module, then the top functions ' +
        '(compiled `dist/` line numbers):',
    );
    out.push('', markdownTable(['module', ...t.head], t.mods));
    out.push('', markdownTable(['function', ...t.head], t.fns), '');
  }
  for (const note of report.notes) out.push(`Note: ${note}`, '');
  return out.join('\n');
}

/** Replaces the generated PXE section of `path`; the rest of the file is left as it is. */
export async function updateDocs(path: string, report: BenchReport): Promise<void> {
  await replaceDocsSection(
    path,
    { begin: DOCS_BEGIN, end: DOCS_END, label: 'PXE' },
    renderMarkdown(report),
  );
}
