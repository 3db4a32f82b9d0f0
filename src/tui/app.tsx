/** @jsxImportSource react */
/**
 * The wizard's screens: plain functions of the state machine's state. Sized for an 80x25 Linux
 * console: one header box, at most a screenful of list rows around the cursor, one key guide.
 * Nothing relies on colour alone: refused disks also say "refused", the current step is bracketed.
 */
import { Box, Text, useInput, type Key } from 'ink';
import { useEffect, useSyncExternalStore } from 'react';
import { formatBytes } from '../cli/output.ts';
import { progressFraction, type FlashProgress } from '../core/progress.ts';
import type { Disk } from '../flash/disks.ts';
import type { FlashPlan } from '../flash/plan.ts';
import type { WizardController } from './controller.ts';
import {
  planAllowed,
  stageOf,
  STAGE_TITLES,
  STAGES,
  type Stage,
  type WizardKey,
  type WizardState,
} from './state.ts';

export interface Glyphs {
  border: 'single' | 'classic';
  barDone: string;
  barTodo: string;
}

export const UNICODE_GLYPHS: Glyphs = { border: 'single', barDone: '█', barTodo: '░' };
export const ASCII_GLYPHS: Glyphs = { border: 'classic', barDone: '#', barTodo: '.' };

/**
 * ASCII only on the Linux virtual console (its font may lack the box and block glyphs Ink's
 * borders use) and wherever the locale does not promise UTF-8.
 */
export function wantsAscii(env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.TERM === 'linux') return true;
  const locale = env.LC_ALL || env.LC_CTYPE || env.LANG || '';
  return !/utf-?8/i.test(locale);
}

export interface HeaderInfo {
  version: string;
  imageRoot: string;
}

/** Terminal bytes (as Ink decodes them) to the state machine's keys; null to ignore. */
export function decodeKey(input: string, key: Key): WizardKey | null {
  if (key.ctrl && input === 'c') return { name: 'ctrl-c' };
  if (key.return) return { name: 'enter' };
  if (key.escape) return { name: 'escape' };
  if (key.upArrow) return { name: 'up' };
  if (key.downArrow) return { name: 'down' };
  if (key.backspace || key.delete) return { name: 'backspace' };
  if (key.ctrl || key.meta || input === '') return null;
  return { name: 'char', char: input };
}

const WIDTH = 80;
/** List rows shown at once: 25 lines minus header, banner, table head, notice and key guide. */
const VISIBLE_ROWS = 10;
/** A refused disk takes two lines (its reason below it). */
const VISIBLE_DISKS = 7;

export function WizardApp(props: {
  controller: WizardController;
  header: HeaderInfo;
  glyphs: Glyphs;
}) {
  const { controller } = props;
  const state = useSyncExternalStore(controller.subscribe, controller.getState);
  useEffect(() => controller.begin(), [controller]);
  useInput((input, key) => {
    const decoded = decodeKey(input, key);
    if (decoded) controller.dispatch({ type: 'key', key: decoded });
  });
  return <WizardScreen state={state} header={props.header} glyphs={props.glyphs} />;
}

export function WizardScreen({
  state,
  header,
  glyphs,
}: {
  state: WizardState;
  header: HeaderInfo;
  glyphs: Glyphs;
}) {
  const stage = stageOf(state);
  return (
    <Box flexDirection="column" width={WIDTH}>
      <Header state={state} stage={stage} header={header} glyphs={glyphs} />
      {state.banner ? <Text color="red">{clip(state.banner, WIDTH)}</Text> : null}
      {state.loadError ? <Text color="red">{clip(state.loadError, WIDTH * 2)}</Text> : null}
      <Body state={state} stage={stage} glyphs={glyphs} />
      {state.notice ? <Text color="yellow">{clip(state.notice, WIDTH * 2)}</Text> : null}
      <Text dimColor>{keyGuide(state, stage)}</Text>
    </Box>
  );
}

function Header({
  state,
  stage,
  header,
  glyphs,
}: {
  state: WizardState;
  stage: Stage;
  header: HeaderInfo;
  glyphs: Glyphs;
}) {
  const steps = STAGES.map((s, i) =>
    s === stage ? `[${i + 1}.${STAGE_TITLES[s]}]` : `${i + 1}.${STAGE_TITLES[s]}`,
  ).join(' > ');
  const picked = [
    state.image ? `image: ${state.image.name}` : null,
    state.disk ? `disk: ${state.disk.path} (${formatBytes(state.disk.size_bytes)})` : null,
  ].filter((x) => x !== null);
  return (
    <Box flexDirection="column" borderStyle={glyphs.border} paddingX={1} width={WIDTH}>
      <Text bold>{`bty ${header.version}  ${steps}`}</Text>
      <Text>{clip(`catalog: ${state.catalog ?? '(local image root only)'}`, WIDTH - 4)}</Text>
      <Text>{clip(`image root: ${header.imageRoot}`, WIDTH - 4)}</Text>
      {picked.length > 0 ? <Text>{clip(picked.join('   '), WIDTH - 4)}</Text> : null}
    </Box>
  );
}

function Body({ state, stage, glyphs }: { state: WizardState; stage: Stage; glyphs: Glyphs }) {
  switch (stage) {
    case 'source':
      return <SourceScreen state={state} />;
    case 'image':
      return <ImageScreen state={state} />;
    case 'disk':
      return <DiskScreen state={state} />;
    case 'confirm':
      return <ConfirmScreen state={state} />;
    case 'flash':
      return <FlashScreen state={state} glyphs={glyphs} />;
    case 'result':
      return <ResultScreen state={state} />;
  }
}

function SourceScreen({ state }: { state: WizardState }) {
  if (state.typing !== null) {
    return (
      <Box flexDirection="column">
        <Text bold>Custom catalog source</Text>
        <Text dimColor>A local TOML path, http://bty-server:8080/catalog.toml,</Text>
        <Text dimColor>oras://ghcr.io/owner/repo:tag, or empty for the local image root only.</Text>
        <Text>{`source> ${state.typing}_`}</Text>
      </Box>
    );
  }
  return (
    <Box flexDirection="column">
      <Text bold>How should bty find images?</Text>
      <Text>{'  [d] the default catalog'}</Text>
      <Text>{'  [c] a custom source (TOML path, http(s)://, oras://, a bty-web catalog)'}</Text>
      <Text>{'  [l] the local image root only'}</Text>
    </Box>
  );
}

/** The slice of rows to show so the cursor stays visible. */
function windowOf<T>(rows: T[], cursor: number, size = VISIBLE_ROWS): { start: number; rows: T[] } {
  const start = Math.max(0, Math.min(cursor - Math.floor(size / 2), rows.length - size));
  return { start, rows: rows.slice(start, start + size) };
}

function ImageScreen({ state }: { state: WizardState }) {
  if (state.images === null) return <Text>Loading images...</Text>;
  if (state.images.length === 0) {
    return (
      <Box flexDirection="column">
        <Text bold>No images found.</Text>
        <Text>Drop image files into the image root and press r, or Esc to choose a catalog.</Text>
      </Box>
    );
  }
  const view = windowOf(state.images, state.cursor);
  return (
    <Box flexDirection="column">
      <Text bold>
        {row(['#', 3], ['Name', 32], ['Format', 8], ['Arch', 8], ['Size', 10], ['Source', 8])}
      </Text>
      {view.rows.map((image, i) => {
        const index = view.start + i;
        const current = index === state.cursor;
        return (
          <Text key={`${index}-${image.name}`} inverse={current}>
            {row(
              [`${current ? '>' : ' '}${index + 1}`, 3],
              [image.name, 32],
              [image.format ?? '?', 8],
              [image.arch ?? '?', 8],
              [image.size_bytes ? formatBytes(image.size_bytes) : '-', 10],
              [image.source, 8],
            )}
          </Text>
        );
      })}
      <Text dimColor>{`${state.images.length} image(s)`}</Text>
    </Box>
  );
}

function DiskScreen({ state }: { state: WizardState }) {
  if (state.disks === null) return <Text>Looking for disks...</Text>;
  if (state.disks.length === 0) {
    return (
      <Box flexDirection="column">
        <Text color="red" bold>
          No disks detected.
        </Text>
        <Text>Attach a target disk and press r (lsblk on another console shows what exists).</Text>
      </Box>
    );
  }
  const view = windowOf(state.disks, state.cursor, VISIBLE_DISKS);
  return (
    <Box flexDirection="column">
      <Text bold>
        {row(['#', 3], ['Path', 14], ['Size', 10], ['Model', 20], ['Tran', 6], ['Serial', 20])}
      </Text>
      {view.rows.map((disk, i) => (
        <DiskRow
          key={disk.path}
          disk={disk}
          index={view.start + i}
          current={view.start + i === state.cursor}
        />
      ))}
    </Box>
  );
}

function DiskRow({ disk, index, current }: { disk: Disk; index: number; current: boolean }) {
  const line = row(
    [`${current ? '>' : ' '}${index + 1}`, 3],
    [disk.path, 14],
    [formatBytes(disk.size_bytes), 10],
    [disk.model ?? '', 20],
    [disk.tran ?? '', 6],
    [disk.serial ?? '', 20],
  );
  if (disk.eligible) return <Text inverse={current}>{line}</Text>;
  const why = disk.reasons.map((r) => r.message).join('; ');
  return (
    <Box flexDirection="column">
      <Text dimColor inverse={current}>
        {line}
      </Text>
      <Text dimColor>{clip(`    refused: ${why}`, WIDTH)}</Text>
    </Box>
  );
}

function ConfirmScreen({ state }: { state: WizardState }) {
  if (state.planError !== null) {
    return (
      <Box flexDirection="column">
        <Text color="red" bold>
          Plan rejected
        </Text>
        <Text>{state.planError}</Text>
      </Box>
    );
  }
  if (state.plan === null) return <Text>Checking the image and the target...</Text>;
  return (
    <PlanView
      plan={state.plan}
      disk={state.disk}
      allowed={planAllowed(state)}
      readBack={state.readBack}
    />
  );
}

function PlanView({
  plan,
  disk,
  allowed,
  readBack,
}: {
  plan: FlashPlan;
  /** The picked disk: its listed identity (a test loop device's) when the probe finds none. */
  disk: Disk | null;
  allowed: boolean;
  readBack: boolean;
}) {
  const img = plan.image;
  const t = plan.target;
  const lines: Array<[string, string]> = [
    ['image', img.source],
    ['format', `${img.format} (content: ${img.content})`],
    [
      'sizes',
      `${formatBytes(img.size_bytes)} file, ` +
        (img.virtual_size_bytes !== null
          ? `${formatBytes(img.virtual_size_bytes)} on disk`
          : 'size on disk unknown'),
    ],
    ['target', `${t.path}  ${formatBytes(t.size_bytes)}`],
    ['model', t.model ?? disk?.model ?? '-'],
    ['serial', t.serial ?? disk?.serial ?? '-'],
    [
      'sha256',
      img.sha256
        ? `checked while writing (${img.sha256.slice(0, 16)}...)`
        : 'none known: not checked',
    ],
    ['read-back', readBack ? 'yes: compared after writing' : 'no (press v to read back)'],
  ];
  return (
    <Box flexDirection="column">
      <Text bold color={allowed ? 'green' : 'red'}>
        {allowed ? 'Flash plan' : 'Flash plan (refused)'}
      </Text>
      {lines.map(([k, v]) => (
        <Text key={k}>{clip(`  ${k.padEnd(10)}${v}`, WIDTH)}</Text>
      ))}
      {plan.notes.map((n) => (
        <Text key={n} dimColor>
          {clip(`  note: ${n}`, WIDTH * 2)}
        </Text>
      ))}
      {plan.refusals.map((r) => (
        <Text key={r.message} color="red">
          {`  refused: ${r.message}`}
        </Text>
      ))}
      {allowed ? (
        <Box flexDirection="column">
          <Text bold>{`This overwrites ALL DATA on ${t.path}.`}</Text>
          <Text bold>Press y to flash; any other key goes back.</Text>
        </Box>
      ) : null}
    </Box>
  );
}

const PHASE_LABELS: Record<FlashProgress['phase'], string> = {
  resolve: 'checking',
  download: 'downloading',
  write: 'writing',
  sync: 'syncing',
  verify: 'verifying',
  done: 'done',
  failed: 'failed',
};

function eta(seconds: number | null): string {
  if (seconds === null) return '--:--';
  const m = Math.floor(seconds / 60);
  return `${m}:${String(Math.round(seconds % 60)).padStart(2, '0')}`;
}

export function progressBar(p: FlashProgress | null, glyphs: Glyphs, width: number): string {
  const fraction = p ? progressFraction(p) : null;
  if (fraction === null) return glyphs.barTodo.repeat(width);
  const done = Math.round(fraction * width);
  return glyphs.barDone.repeat(done) + glyphs.barTodo.repeat(width - done);
}

function FlashScreen({ state, glyphs }: { state: WizardState; glyphs: Glyphs }) {
  const p = state.progress;
  const fraction = p ? progressFraction(p) : null;
  let amount = '';
  if (p) {
    amount =
      p.bytes_total !== null
        ? `${formatBytes(p.bytes_done)} / ${formatBytes(p.bytes_total)}`
        : formatBytes(p.bytes_done);
    // A streamed image has no known size on disk: how much of the file was read is the gauge.
    if (p.bytes_total === null && p.source_bytes_total) {
      amount += ` (read ${formatBytes(p.source_bytes_done ?? 0)} of ${formatBytes(p.source_bytes_total)})`;
    }
  }
  return (
    <Box flexDirection="column">
      <Text bold>{`Flashing ${state.image?.name ?? ''} -> ${state.disk?.path ?? ''}`}</Text>
      <Text>{`phase: ${p ? PHASE_LABELS[p.phase] : 'starting'}${p?.message ? ` (${p.message})` : ''}`}</Text>
      <Text>{`[${progressBar(p, glyphs, 50)}] ${fraction === null ? '  ?' : `${Math.floor(fraction * 100)}`.padStart(3)}%`}</Text>
      <Text>
        {`${amount}   ${p && p.rate_bps > 0 ? `${formatBytes(p.rate_bps)}/s` : ''}   ETA ${eta(p?.eta_seconds ?? null)}   resumes: ${p?.resumes ?? 0}`}
      </Text>
      {state.askCancel ? (
        <Box flexDirection="column">
          <Text color="yellow" bold>
            Cancel the flash? The disk will hold a partial image.
          </Text>
          <Text color="yellow" bold>
            Press y (or Ctrl-C again) to cancel, any other key to go on.
          </Text>
        </Box>
      ) : null}
      {state.cancelling ? (
        <Text color="yellow">Cancelling: stopping the download and the writers...</Text>
      ) : null}
    </Box>
  );
}

function ResultScreen({ state }: { state: WizardState }) {
  const o = state.outcome;
  if (!o) return null;
  if (o.ok) {
    return (
      <Box flexDirection="column">
        <Text color="green" bold>
          {`Flash completed: ${state.image?.name ?? ''} -> ${o.target}`}
        </Text>
        <Text>{`  ${formatBytes(o.imageBytes)} image, ${formatBytes(o.bytesWritten)} written in ${o.seconds.toFixed(1)} s${o.resumes ? `, download resumed ${o.resumes}x` : ''}`}</Text>
        <Text>{`  sha256:    ${o.sha256Verified ? 'verified while writing' : 'not checked (no digest known)'}`}</Text>
        <Text>{`  read-back: ${o.readBackVerified ? 'verified' : 'not done'}`}</Text>
        <Text>Remove the boot medium if needed, then reboot into the new system.</Text>
      </Box>
    );
  }
  return (
    <Box flexDirection="column">
      <Text color="red" bold>
        {o.cancelled ? 'Flash cancelled.' : 'Flash FAILED.'}
      </Text>
      <Text>{o.message}</Text>
      <Text>{`What to do: ${o.hint}`}</Text>
    </Box>
  );
}

function keyGuide(state: WizardState, stage: Stage): string {
  switch (stage) {
    case 'source':
      return state.typing !== null
        ? '[Enter] use this source   [Esc] cancel   [Backspace] erase'
        : '[d] default   [c] custom   [l] local only   [Enter] keep current   [q] quit';
    case 'image':
    case 'disk':
      return '[#/arrows] choose   [Enter] pick   [Esc] back   [r] refresh   [q] quit';
    case 'confirm':
      return planAllowed(state)
        ? '[y] flash   [v] read-back on/off   [r] re-check   [q] quit   other keys: back'
        : '[Esc] back   [r] re-check   [q] quit';
    case 'flash':
      return '[Ctrl-C] cancel';
    case 'result':
      return state.outcome?.ok
        ? '[b] reboot now   [a] flash another   [Esc] back   [q] quit'
        : '[Enter] try again   [a] another image   [Esc] back   [q] quit';
  }
}

/** Fixed-width columns, each cut to fit, so a table never wraps on 80 columns. */
function row(...cells: Array<[string, number]>): string {
  return cells.map(([text, width]) => clip(text, width - 1).padEnd(width)).join('');
}

function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 3))}...`;
}
