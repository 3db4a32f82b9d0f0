/**
 * Where bty-web's time goes during a storm: a V8 CPU profile (`node --cpu-prof`) summarised by
 * module and by function, over the samples taken while the storm ran.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileShare {
  name: string;
  /** Samples in which this was the running code. */
  selfMs: number;
  selfShare: number;
  /** Samples in which this was anywhere on the stack (modules only). */
  stackMs?: number;
  stackShare?: number;
}

export interface ProfileSummary {
  /** The time the summarised samples cover. */
  windowMs: number;
  samples: number;
  /** False when no sample fell in the storm's window and the whole profile was used. */
  windowed: boolean;
  modules: ProfileShare[];
  functions: ProfileShare[];
}

/** The module a frame belongs to, as a reader of this report thinks of it. */
export function moduleOf(frame: CallFrame): string {
  const { functionName: fn, url } = frame;
  if (fn === '(idle)') return '(idle)';
  if (fn === '(garbage collector)') return '(garbage collector)';
  if (fn === '(program)') return '(program: V8 and native code)';
  if (fn === '(root)') return '(root)';
  if (url === '') return 'native built-ins (socket writes, JSON, ...)';
  if (url.startsWith('node:')) {
    const parts = url.slice('node:'.length).split('/');
    return `node:${parts[0] === 'internal' ? parts.slice(0, 2).join('/') : parts[0]}`;
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/');
    return `npm ${parts[0]?.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]}`;
  }
  // The adapter's run/all/prepare do nothing but call node:sqlite: their self time is SQLite's.
  if (url.endsWith('/dist/src/web/db/sqlite.js'))
    return 'SQLite (node:sqlite, via src/web/db/sqlite.ts)';
  const dist = url.indexOf('/dist/src/');
  if (dist >= 0) {
    const path = url.slice(dist + '/dist/'.length).split('/');
    return `bty ${path.slice(0, -1).join('/')}`;
  }
  return 'other';
}

function whereOf(frame: CallFrame): string {
  if (frame.url === '') return '';
  const url = frame.url.replace(/^file:\/\//, '');
  const nm = url.lastIndexOf('/node_modules/');
  const dist = url.indexOf('/dist/src/');
  const short =
    nm >= 0
      ? url.slice(nm + '/node_modules/'.length)
      : dist >= 0
        ? url.slice(dist + '/dist/'.length)
        : url;
  return `${short}:${frame.lineNumber + 1}`;
}

/** The newest `.cpuprofile` in `dir`. */
export async function findProfile(dir: string): Promise<string> {
  const names = (await readdir(dir)).filter((n) => n.endsWith('.cpuprofile')).sort();
  const last = names.at(-1);
  if (last === undefined) throw new Error(`no .cpuprofile was written in ${dir}`);
  return join(dir, last);
}

/**
 * Summarises `file` over the samples between `fromUs` and `toUs` (CLOCK_MONOTONIC microseconds,
 * the clock of both V8's profile and `process.hrtime`).
 */
export async function summariseProfile(
  file: string,
  fromUs: number,
  toUs: number,
  top = 40,
): Promise<ProfileSummary> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const stackModules = new Map<number, Set<string>>();
  const modulesOnStack = (id: number): Set<string> => {
    const known = stackModules.get(id);
    if (known) return known;
    const node = byId.get(id);
    const up = parent.get(id);
    const set = new Set(up === undefined ? [] : modulesOnStack(up));
    if (node) set.add(moduleOf(node.callFrame));
    stackModules.set(id, set);
    return set;
  };

  const collect = (windowed: boolean) => {
    const self = new Map<string, number>();
    const stack = new Map<string, number>();
    const fns = new Map<string, number>();
    let total = 0;
    let samples = 0;
    let t = profile.startTime;
    for (let i = 0; i < profile.samples.length; i++) {
      const delta = profile.timeDeltas[i] ?? 0;
      t += delta;
      if (windowed && (t < fromUs || t > toUs)) continue;
      const node = byId.get(profile.samples[i] ?? -1);
      if (!node) continue;
      // A sample's delta is the time since the previous one: charge it to this sample.
      const us = Math.max(0, delta);
      total += us;
      samples++;
      const mod = moduleOf(node.callFrame);
      self.set(mod, (self.get(mod) ?? 0) + us);
      for (const m of modulesOnStack(node.id)) stack.set(m, (stack.get(m) ?? 0) + us);
      const fn =
        `${node.callFrame.functionName || '(anonymous)'} ${whereOf(node.callFrame)}`.trim();
      fns.set(fn, (fns.get(fn) ?? 0) + us);
    }
    return { self, stack, fns, total, samples };
  };

  let windowed = true;
  let data = collect(true);
  if (data.samples === 0) {
    windowed = false;
    data = collect(false);
  }
  const share = (us: number) => (data.total === 0 ? 0 : us / data.total);
  const modules: ProfileShare[] = [...data.self.keys(), ...data.stack.keys()]
    .filter((m, i, all) => all.indexOf(m) === i && m !== '(root)')
    .map((name) => {
      const selfUs = data.self.get(name) ?? 0;
      const stackUs = data.stack.get(name) ?? 0;
      return {
        name,
        selfMs: selfUs / 1000,
        selfShare: share(selfUs),
        stackMs: stackUs / 1000,
        stackShare: share(stackUs),
      };
    })
    .sort((a, b) => b.selfMs - a.selfMs);
  const functions: ProfileShare[] = [...data.fns.entries()]
    .map(([name, us]) => ({ name, selfMs: us / 1000, selfShare: share(us) }))
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, top);
  return { windowMs: data.total / 1000, samples: data.samples, windowed, modules, functions };
}
