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
/** The Linux console's height: no frame may be taller, or its top scrolls out of sight. */
const HEIGHT = 25;
/** Image rows shown at most, however much room is left. */
const VISIBLE_ROWS = 10;
/** Lines a one-off notice may take (a refused disk's reasons can be long). */
const NOTICE_LINES = 2;

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
  const notice = state.notice ? wrapText(state.notice, WIDTH, NOTICE_LINES) : [];
  // Every line is cut to fit by hand (Ink would wrap it), so the body gets exactly what is left
  // of the 25 rows: header box, banner, catalog error, notice and key guide come first.
  const headerLines = 2 + 3 + (state.image || state.disk ? 1 : 0);
  const bodyRows =
    HEIGHT - headerLines - (state.banner ? 1 : 0) - (state.loadError ? 1 : 0) - notice.length - 1;
  return (
    <Box flexDirection="column" width={WIDTH}>
      <Header state={state} stage={stage} header={header} glyphs={glyphs} />
      {state.banner ? <Line color="red">{state.banner}</Line> : null}
      {state.loadError ? <Line color="red">{state.loadError}</Line> : null}
      <Body state={state} stage={stage} glyphs={glyphs} rows={bodyRows} />
      {notice.map((line, i) => (
        <Line key={i} color="yellow">
          {line}
        </Line>
      ))}
      <Line dimColor>{keyGuide(state, stage)}</Line>
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
      <Text bold>{clip(`bty ${header.version}  ${steps}`, WIDTH - 4)}</Text>
      <Text>{clip(`catalog: ${state.catalog ?? '(local image root only)'}`, WIDTH - 4)}</Text>
      <Text>{clip(`image root: ${header.imageRoot}`, WIDTH - 4)}</Text>
      {picked.length > 0 ? <Text>{clip(picked.join('   '), WIDTH - 4)}</Text> : null}
    </Box>
  );
}

/** `rows`: the lines the screen may use, whatever it has to show. */
function Body({
  state,
  stage,
  glyphs,
  rows,
}: {
  state: WizardState;
  stage: Stage;
  glyphs: Glyphs;
  rows: number;
}) {
  switch (stage) {
    case 'source':
      return <SourceScreen state={state} />;
    case 'image':
      return <ImageScreen state={state} rows={rows} />;
    case 'disk':
      return <DiskScreen state={state} rows={rows} />;
    case 'confirm':
      return <ConfirmScreen state={state} rows={rows} />;
    case 'flash':
      return <FlashScreen state={state} glyphs={glyphs} />;
    case 'result':
      return <ResultScreen state={state} rows={rows} />;
  }
}

function SourceScreen({ state }: { state: WizardState }) {
  if (state.typing !== null) {
    return (
      <Box flexDirection="column">
        <Text bold>Custom catalog source</Text>
        <Text dimColor>A local TOML path, http://bty-server:8080/catalog.toml,</Text>
        <Text dimColor>oras://ghcr.io/owner/repo:tag, or empty for the local image root only.</Text>
        {/* A long source shows its end, where the typing happens. */}
        <Text>{`source> ${clipStart(`${state.typing}_`, WIDTH - 'source> '.length)}`}</Text>
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

/**
 * The slice of items to show so the cursor stays visible: grown from the cursor's row, one below
 * then one above, while the lines they take (`height`) fit in `budget`.
 */
export function windowOf<T>(
  items: T[],
  cursor: number,
  budget: number,
  height: (item: T) => number = () => 1,
): { start: number; rows: T[] } {
  if (items.length === 0) return { start: 0, rows: [] };
  const at = Math.max(0, Math.min(cursor, items.length - 1));
  let start = at;
  let end = at + 1;
  let used = height(items[at]!);
  for (let grew = true; grew;) {
    grew = false;
    if (end < items.length && used + height(items[end]!) <= budget) {
      used += height(items[end]!);
      end++;
      grew = true;
    }
    // One below, one above: the cursor sits mid-window until an end of the list is reached.
    if (start > 0 && used + height(items[start - 1]!) <= budget) {
      start--;
      used += height(items[start]!);
      grew = true;
    }
  }
  return { start, rows: items.slice(start, end) };
}

function ImageScreen({ state, rows }: { state: WizardState; rows: number }) {
  if (state.images === null) return <Text>Loading images...</Text>;
  if (state.images.length === 0) {
    return (
      <Box flexDirection="column">
        <Text bold>No images found.</Text>
        <Text>Drop image files into the image root and press r, or Esc to choose a catalog.</Text>
      </Box>
    );
  }
  // The table head and the count line take two of the rows.
  const view = windowOf(state.images, state.cursor, Math.max(1, Math.min(VISIBLE_ROWS, rows - 2)));
  return (
    <Box flexDirection="column">
      <Text bold>
        {row(['#', 5], ['Name', 32], ['Format', 8], ['Arch', 8], ['Size', 10], ['Source', 8])}
      </Text>
      {view.rows.map((image, i) => {
        const index = view.start + i;
        const current = index === state.cursor;
        return (
          <Text key={`${index}-${image.name}`} inverse={current}>
            {row(
              [`${current ? '>' : ' '}${index + 1}`, 5],
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

/** Lines a disk row takes: a refused disk says why on the line below. */
const diskHeight = (disk: Disk) => (disk.eligible ? 1 : 2);

function DiskScreen({ state, rows }: { state: WizardState; rows: number }) {
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
  // The table head and the count line take two of the rows.
  const view = windowOf(state.disks, state.cursor, Math.max(2, rows - 2), diskHeight);
  const hidden = state.disks.length - view.rows.length;
  return (
    <Box flexDirection="column">
      <Text bold>
        {row(['#', 5], ['Path', 14], ['Size', 10], ['Model', 20], ['Tran', 6], ['Serial', 20])}
      </Text>
      {view.rows.map((disk, i) => (
        <DiskRow
          key={disk.path}
          disk={disk}
          index={view.start + i}
          current={view.start + i === state.cursor}
        />
      ))}
      <Text dimColor>
        {hidden > 0
          ? `${state.disks.length} disk(s), ${hidden} more off screen (arrows scroll)`
          : `${state.disks.length} disk(s)`}
      </Text>
    </Box>
  );
}

function DiskRow({ disk, index, current }: { disk: Disk; index: number; current: boolean }) {
  const line = row(
    [`${current ? '>' : ' '}${index + 1}`, 5],
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

function ConfirmScreen({ state, rows }: { state: WizardState; rows: number }) {
  if (state.planError !== null) {
    return (
      <Box flexDirection="column">
        <Text color="red" bold>
          Plan rejected
        </Text>
        {wrapText(state.planError, WIDTH, Math.max(1, rows - 1)).map((line, i) => (
          <Line key={i}>{line}</Line>
        ))}
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
      rows={rows}
    />
  );
}

function PlanView({
  plan,
  disk,
  allowed,
  readBack,
  rows,
}: {
  plan: FlashPlan;
  /** The picked disk: its listed identity (a test loop device's) when the probe finds none. */
  disk: Disk | null;
  allowed: boolean;
  readBack: boolean;
  rows: number;
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
  // Refusals come before notes: they say why `y` does nothing. What does not fit is counted.
  let room = rows - 1 - lines.length - (allowed ? 2 : 0);
  const take = (items: string[]): { shown: string[]; more: number } => {
    if (items.length <= room) {
      room -= items.length;
      return { shown: items, more: 0 };
    }
    const shown = items.slice(0, Math.max(0, room - 1));
    room -= shown.length + 1;
    return { shown, more: items.length - shown.length };
  };
  const refusals = take(plan.refusals.map((r) => r.message));
  const notes = take(plan.notes);
  return (
    <Box flexDirection="column">
      <Text bold color={allowed ? 'green' : 'red'}>
        {allowed ? 'Flash plan' : 'Flash plan (refused)'}
      </Text>
      {lines.map(([k, v]) => (
        <Line key={k}>{`  ${k.padEnd(10)}${v}`}</Line>
      ))}
      {refusals.shown.map((message, i) => (
        <Line key={`r${i}`} color="red">
          {`  refused: ${message}`}
        </Line>
      ))}
      {refusals.more > 0 ? (
        <Line color="red">{`  ... ${refusals.more} more refusal(s)`}</Line>
      ) : null}
      {notes.shown.map((note, i) => (
        <Line key={`n${i}`} dimColor>
          {`  note: ${note}`}
        </Line>
      ))}
      {notes.more > 0 ? <Line dimColor>{`  ... ${notes.more} more note(s)`}</Line> : null}
      {allowed ? (
        <Box flexDirection="column">
          <Line bold>{`This overwrites ALL DATA on ${t.path}.`}</Line>
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
      <Line bold>{`Flashing ${state.image?.name ?? ''} -> ${state.disk?.path ?? ''}`}</Line>
      <Line>{`phase: ${p ? PHASE_LABELS[p.phase] : 'starting'}${p?.message ? ` (${p.message})` : ''}`}</Line>
      <Text>{`[${progressBar(p, glyphs, 50)}] ${fraction === null ? '  ?' : `${Math.floor(fraction * 100)}`.padStart(3)}%`}</Text>
      <Line>
        {`${amount}   ${p && p.rate_bps > 0 ? `${formatBytes(p.rate_bps)}/s` : ''}   ETA ${eta(p?.eta_seconds ?? null)}   resumes: ${p?.resumes ?? 0}`}
      </Line>
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

function ResultScreen({ state, rows }: { state: WizardState; rows: number }) {
  const o = state.outcome;
  if (!o) return null;
  if (o.ok) {
    return (
      <Box flexDirection="column">
        <Line color="green" bold>
          {`Flash completed: ${state.image?.name ?? ''} -> ${o.target}`}
        </Line>
        <Line>{`  ${formatBytes(o.imageBytes)} image, ${formatBytes(o.bytesWritten)} written in ${o.seconds.toFixed(1)} s${o.resumes ? `, download resumed ${o.resumes}x` : ''}`}</Line>
        <Line>{`  sha256:    ${o.sha256Verified ? 'verified while writing' : 'not checked (no digest known)'}`}</Line>
        <Line>{`  read-back: ${o.readBackVerified ? 'verified' : 'not done'}`}</Line>
        <Line>Remove the boot medium if needed, then reboot into the new system.</Line>
      </Box>
    );
  }
  const title = o.diskChanged
    ? 'The disk changed: nothing was written.'
    : o.cancelled
      ? 'Flash cancelled.'
      : 'Flash FAILED.';
  // The hint gets up to two lines; the message the rest.
  const hint = wrapText(`What to do: ${o.hint}`, WIDTH, Math.min(2, Math.max(1, rows - 2)));
  const message = wrapText(o.message, WIDTH, Math.max(1, rows - 1 - hint.length));
  return (
    <Box flexDirection="column">
      <Text color="red" bold>
        {title}
      </Text>
      {message.map((line, i) => (
        <Line key={`m${i}`}>{line}</Line>
      ))}
      {hint.map((line, i) => (
        <Line key={`h${i}`}>{line}</Line>
      ))}
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
      if (state.outcome?.ok) {
        return state.noReboot
          ? '[b] leave (reboot skipped: --no-reboot)   [a] flash another   [Esc] back   [q] quit'
          : '[b] reboot now   [a] flash another   [Esc] back   [q] quit';
      }
      return state.outcome?.diskChanged
        ? '[Enter] pick the disk again   [a] another image   [Esc] back   [q] quit'
        : '[Enter] try again   [a] another image   [Esc] back   [q] quit';
  }
}

/** Fixed-width columns, each cut to fit, so a table never wraps on 80 columns. */
function row(...cells: Array<[string, number]>): string {
  return cells.map(([text, width]) => clip(text, width - 1).padEnd(width)).join('');
}

/** One line of text, never wrapped: cut to the screen's width with `...`. */
function Line({
  children,
  ...style
}: {
  children: string;
  color?: string;
  bold?: boolean;
  dimColor?: boolean;
}) {
  return <Text {...style}>{clip(children.replace(/[\r\n\t]+/g, ' '), WIDTH)}</Text>;
}

export function clip(text: string, width: number): string {
  return text.length <= width ? text : `${text.slice(0, Math.max(0, width - 3))}...`;
}

/** Keeps the end of a text that is too long (what is being typed), marked with `...`. */
function clipStart(text: string, width: number): string {
  return text.length <= width ? text : `...${text.slice(text.length - Math.max(0, width - 3))}`;
}

/** Word-wraps to at most `maxLines` lines of `width`; the last one cut with `...` if need be. */
export function wrapText(text: string, width: number, maxLines: number): string[] {
  const lines: string[] = [];
  let rest = text.replace(/\s+/g, ' ').trim();
  while (rest !== '' && lines.length < maxLines) {
    if (rest.length <= width) {
      lines.push(rest);
      break;
    }
    if (lines.length === maxLines - 1) {
      lines.push(clip(rest, width));
      break;
    }
    const space = rest.lastIndexOf(' ', width);
    const cut = space > 0 ? space : width;
    lines.push(rest.slice(0, cut).trimEnd());
    rest = rest.slice(cut).trimStart();
  }
  return lines;
}
