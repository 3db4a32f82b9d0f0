/**
 * The wizard as a pure state machine: no Ink, no I/O. `step(state, event)` returns the next state
 * and the effects the caller must run (load, probe, flash, reboot, quit); their outcomes come
 * back as events. Keeping every decision here makes the whole key map testable as a table.
 *
 * The stage is derived from what the operator has committed, as upstream bty derives it, so
 * `back()` only has to clear the most recent commit.
 */
import type { PickerRow } from '../catalog/merge.ts';
import type { FlashProgress } from '../core/progress.ts';
import type { Disk } from '../flash/disks.ts';
import type { FlashPlan } from '../flash/plan.ts';

/** What `[d]` loads: upstream's default catalog (spec upstream-cli.md §5.2). */
export const DEFAULT_CATALOG_URL =
  'https://github.com/safl/nosi/releases/latest/download/catalog.toml';

export const STAGES = ['source', 'image', 'disk', 'confirm', 'flash', 'result'] as const;
export type Stage = (typeof STAGES)[number];

export const STAGE_TITLES: Record<Stage, string> = {
  source: 'Source',
  image: 'Image',
  disk: 'Disk',
  confirm: 'Confirm',
  flash: 'Flash',
  result: 'Result',
};

/** A key press, already decoded from the terminal's bytes by the Ink layer. */
export type WizardKey =
  | { name: 'enter' | 'escape' | 'up' | 'down' | 'backspace' | 'ctrl-c' }
  | { name: 'char'; char: string };

/**
 * What identifies a listed disk, kept from the moment it was listed so the write can be refused
 * when another device took its path (a USB stick swapped while the confirm screen was up).
 */
export interface DiskIdentity {
  serial: string | null;
  wwn: string | null;
  size_bytes: number | null;
  /** Loop devices (test opt-in) have no serial of their own: the attached file stands in. */
  backing_file: string | null;
}

/** A disk as the wizard lists it: the engine's record plus the identity seen when listed. */
export interface WizardDisk extends Disk {
  identity?: DiskIdentity;
}

export type FlashOutcome =
  | {
      ok: true;
      target: string;
      imageBytes: number;
      bytesWritten: number;
      seconds: number;
      sha256: string | null;
      sha256Verified: boolean;
      readBackVerified: boolean;
      resumes: number;
    }
  | {
      ok: false;
      cancelled: boolean;
      message: string;
      hint: string;
      /** The target was no longer the confirmed disk at write time; nothing was written. */
      diskChanged?: boolean;
    };

export interface WizardState {
  /** The catalog source; null means the local image root only. */
  catalog: string | null;
  /** The source step is done (a choice was made, given on the command line, or skipped). */
  chosen: boolean;
  image: PickerRow | null;
  disk: WizardDisk | null;
  flashing: boolean;
  outcome: FlashOutcome | null;
  /** The custom-source text being typed on the source screen; null when not typing. */
  typing: string | null;
  /** Null while loading. */
  images: PickerRow[] | null;
  disks: WizardDisk[] | null;
  plan: FlashPlan | null;
  planError: string | null;
  progress: FlashProgress | null;
  cursor: number;
  /** Digits typed so far on a list screen, so rows past 9 can be picked by number. */
  typedNumber: string;
  /** Read the target back after writing (the sha256 is checked on the wire regardless). */
  readBack: boolean;
  /** Why the agent handed over to the wizard; shown under the header for the whole session. */
  banner: string | null;
  /** The catalog that failed to load (the local images are still listed); cleared by a good load. */
  loadError: string | null;
  /** A one-off message (a bad pick, a refused disk), cleared by the next key. */
  notice: string | null;
  /** Ctrl-C during a flash asks first; this is the question being shown. */
  askCancel: boolean;
  /** `--no-reboot` (from the agent): the reboot key leaves the wizard without rebooting. */
  noReboot: boolean;
  cancelling: boolean;
}

export type Effect =
  | { type: 'loadImages'; catalog: string | null }
  | { type: 'loadDisks' }
  | { type: 'plan'; image: PickerRow; disk: WizardDisk; readBack: boolean }
  | { type: 'flash'; image: PickerRow; disk: WizardDisk; readBack: boolean }
  | { type: 'cancelFlash' }
  | { type: 'reboot' }
  | { type: 'quit' };

export type WizardEvent =
  | { type: 'key'; key: WizardKey }
  | { type: 'imagesLoaded'; rows: PickerRow[]; error: string | null }
  | { type: 'disksLoaded'; disks: WizardDisk[]; error: string | null }
  | { type: 'planned'; plan: FlashPlan }
  | { type: 'planFailed'; disk: string; message: string }
  | { type: 'progress'; progress: FlashProgress }
  | { type: 'flashed'; outcome: FlashOutcome }
  /** SIGTERM: the system is going down, so a flash is cancelled without asking. */
  | { type: 'terminate' };

export type Step = [WizardState, Effect[]];

export interface WizardStart {
  /** From `--catalog`, or the server's catalog when the agent hands over. */
  catalog: string | null;
  /** The image root lists at least one image: the source screen is skipped. */
  localImagesExist: boolean;
  banner?: string | null;
  noReboot?: boolean;
}

export function stageOf(s: WizardState): Stage {
  if (s.outcome) return 'result';
  if (s.flashing) return 'flash';
  if (!s.chosen) return 'source';
  if (!s.image) return 'image';
  if (!s.disk) return 'disk';
  return 'confirm';
}

export function initialState(start: WizardStart): WizardState {
  return {
    catalog: start.catalog,
    chosen: start.catalog !== null || start.localImagesExist,
    image: null,
    disk: null,
    flashing: false,
    outcome: null,
    typing: null,
    images: null,
    disks: null,
    plan: null,
    planError: null,
    progress: null,
    cursor: 0,
    typedNumber: '',
    readBack: false,
    banner: start.banner ?? null,
    loadError: null,
    notice: null,
    askCancel: false,
    cancelling: false,
    noReboot: start.noReboot ?? false,
  };
}

/** The first state and what to load for it. */
export function start(options: WizardStart): Step {
  return arrive(null, initialState(options));
}

/**
 * Settles a transition: on entering a stage, resets the list cursor and asks for what the
 * stage shows. Disks are re-read on every entry so a disk plugged in meanwhile appears.
 */
function arrive(before: WizardState | null, after: WizardState): Step {
  const from = before === null ? null : stageOf(before);
  const to = stageOf(after);
  if (from === to) return [after, []];
  let next: WizardState = { ...after, cursor: 0, typedNumber: '' };
  const effects: Effect[] = [];
  if (to === 'image' && next.images === null) {
    effects.push({ type: 'loadImages', catalog: next.catalog });
  } else if (to === 'disk') {
    next = { ...next, disks: null };
    effects.push({ type: 'loadDisks' });
  } else if (to === 'confirm' && after.image && after.disk) {
    next = { ...next, plan: null, planError: null };
    effects.push({ type: 'plan', image: after.image, disk: after.disk, readBack: next.readBack });
  }
  return [next, effects];
}

/** Clears the most recent commit (upstream's `back()`); a no-op on the first screen. */
export function back(s: WizardState): WizardState {
  const base = { ...s, notice: null };
  if (s.outcome) return { ...base, outcome: null, disk: null };
  if (s.flashing) return s;
  if (s.disk) return { ...base, disk: null };
  if (s.image) return { ...base, image: null };
  if (s.chosen) return { ...base, chosen: false };
  return base;
}

export function step(s: WizardState, event: WizardEvent): Step {
  switch (event.type) {
    case 'key':
      return onKey(s, event.key);
    case 'imagesLoaded':
      return [{ ...s, images: event.rows, loadError: event.error }, []];
    case 'disksLoaded':
      return [{ ...s, disks: event.disks, notice: event.error ?? s.notice }, []];
    case 'planned':
      // A probe answered after the operator moved on (another disk, or back) is stale.
      if (stageOf(s) !== 'confirm' || s.disk?.path !== event.plan.target.path) return [s, []];
      return [{ ...s, plan: event.plan, planError: null }, []];
    case 'planFailed':
      if (stageOf(s) !== 'confirm' || s.disk?.path !== event.disk) return [s, []];
      return [{ ...s, plan: null, planError: event.message }, []];
    case 'progress':
      return s.flashing ? [{ ...s, progress: event.progress }, []] : [s, []];
    case 'flashed':
      return [
        { ...s, flashing: false, outcome: event.outcome, askCancel: false, cancelling: false },
        [],
      ];
    case 'terminate':
      if (!s.flashing || s.cancelling) return [s, []];
      return [{ ...s, askCancel: false, cancelling: true }, [{ type: 'cancelFlash' }]];
  }
}

export const CATALOG_ERROR_PREFIX = 'catalog load failed: ';

function onKey(s: WizardState, key: WizardKey): Step {
  const stage = stageOf(s);
  if (stage === 'flash') return onFlashKey(s, key);
  if (key.name === 'ctrl-c') return [s, [{ type: 'quit' }]];
  // The next key clears a one-off message, whatever it does.
  const cleared: WizardState = { ...s, notice: null };
  switch (stage) {
    case 'source':
      return cleared.typing === null ? onSourceKey(cleared, key) : onTypingKey(cleared, key);
    case 'image':
      return onImageKey(cleared, key);
    case 'disk':
      return onDiskKey(cleared, key);
    case 'confirm':
      return onConfirmKey(cleared, key);
    case 'result':
      return onResultKey(cleared, key);
  }
}

const isChar = (key: WizardKey, ...chars: string[]): boolean =>
  key.name === 'char' && chars.includes(key.char);

function choose(s: WizardState, catalog: string | null): Step {
  // A new source means a new list; the same source keeps what was loaded.
  const images = catalog === s.catalog ? s.images : null;
  return arrive(s, { ...s, catalog, chosen: true, typing: null, images });
}

function onSourceKey(s: WizardState, key: WizardKey): Step {
  if (isChar(key, 'q')) return [s, [{ type: 'quit' }]];
  if (isChar(key, 'd')) return choose(s, DEFAULT_CATALOG_URL);
  if (isChar(key, 'l')) return choose(s, null);
  if (isChar(key, 'c')) return [{ ...s, typing: '' }, []];
  // Enter keeps the current source: after Esc from the image list, it is the way forward again.
  if (key.name === 'enter') return choose(s, s.catalog);
  if (key.name === 'escape') return [s, []];
  return [{ ...s, notice: 'Press d, c, l, Enter (keep the current source) or q.' }, []];
}

function onTypingKey(s: WizardState, key: WizardKey): Step {
  const text = s.typing ?? '';
  switch (key.name) {
    case 'char':
      // Kept exactly as typed: URLs, oras tags and paths are case-sensitive (upstream §9.16).
      return [{ ...s, typing: text + key.char.replace(/[\r\n]/g, '') }, []];
    case 'backspace':
      return [{ ...s, typing: text.slice(0, -1) }, []];
    case 'escape':
      return [{ ...s, typing: null }, []];
    case 'enter': {
      const source = text.trim();
      return choose(s, source === '' ? null : source);
    }
    default:
      return [s, []];
  }
}

/** Cursor moves, number typing and Enter on a list; `pick` commits the row under the cursor. */
function onListKey(
  s: WizardState,
  key: WizardKey,
  count: number,
  kind: string,
  pick: (index: number) => Step,
  refresh: () => Step,
): Step {
  if (key.name === 'up') return [{ ...s, cursor: Math.max(0, s.cursor - 1), typedNumber: '' }, []];
  if (key.name === 'down') {
    return [{ ...s, cursor: Math.max(0, Math.min(count - 1, s.cursor + 1)), typedNumber: '' }, []];
  }
  if (key.name === 'backspace') return [{ ...s, typedNumber: s.typedNumber.slice(0, -1) }, []];
  if (key.name === 'char' && /^[0-9]+$/.test(key.char)) {
    const typed = (s.typedNumber + key.char).replace(/^0+/, '');
    const n = Number(typed);
    if (typed !== '' && n >= 1 && n <= count) {
      return [{ ...s, typedNumber: typed, cursor: n - 1 }, []];
    }
    const notice =
      count === 0
        ? `No ${kind}s to pick yet; press r to look again.`
        : `'${typed || key.char}' is out of range; ${kind} numbers are 1..${count}.`;
    return [{ ...s, typedNumber: '', notice }, []];
  }
  if (key.name === 'enter') return count === 0 ? refresh() : pick(s.cursor);
  if (isChar(key, 'r')) return refresh();
  if (isChar(key, 'q')) return [s, [{ type: 'quit' }]];
  if (key.name === 'escape') return arrive(s, back(s));
  return [
    {
      ...s,
      typedNumber: '',
      notice: 'Pick with a number or the arrows, then Enter; Esc goes back.',
    },
    [],
  ];
}

function onImageKey(s: WizardState, key: WizardKey): Step {
  const rows = s.images ?? [];
  return onListKey(
    s,
    key,
    rows.length,
    'image',
    (i) => {
      const image = rows[i];
      return image ? arrive(s, { ...s, image }) : [s, []];
    },
    () => [{ ...s, images: null }, [{ type: 'loadImages', catalog: s.catalog }]],
  );
}

function onDiskKey(s: WizardState, key: WizardKey): Step {
  const disks = s.disks ?? [];
  return onListKey(
    s,
    key,
    disks.length,
    'disk',
    (i) => {
      const disk = disks[i];
      if (!disk) return [s, []];
      if (!disk.eligible) {
        const why = disk.reasons.map((r) => r.message).join('; ');
        return [{ ...s, notice: `${disk.path} cannot be flashed: ${why}` }, []];
      }
      return arrive(s, { ...s, disk });
    },
    () => [{ ...s, disks: null }, [{ type: 'loadDisks' }]],
  );
}

/** The plan may be flashed: probed, no error, nothing refused. */
export function planAllowed(s: WizardState): boolean {
  return s.plan !== null && s.planError === null && s.plan.refusals.length === 0;
}

function onConfirmKey(s: WizardState, key: WizardKey): Step {
  const probing = s.plan === null && s.planError === null;
  if (isChar(key, 'q')) return [s, [{ type: 'quit' }]];
  if (isChar(key, 'r') || isChar(key, 'v')) {
    const readBack = isChar(key, 'v') ? !s.readBack : s.readBack;
    if (!s.image || !s.disk) return [s, []];
    return [
      { ...s, readBack, plan: null, planError: null },
      [{ type: 'plan', image: s.image, disk: s.disk, readBack }],
    ];
  }
  if (isChar(key, 'y', 'Y') && !probing && planAllowed(s) && s.image && s.disk) {
    return [
      { ...s, flashing: true, progress: null, askCancel: false, cancelling: false },
      [{ type: 'flash', image: s.image, disk: s.disk, readBack: s.readBack }],
    ];
  }
  // Anything else (Enter included) goes back: only an explicit `y` writes a disk.
  if (probing && key.name !== 'escape') return [s, []];
  return arrive(s, back(s));
}

function onFlashKey(s: WizardState, key: WizardKey): Step {
  if (s.cancelling) return [s, []];
  if (s.askCancel) {
    // A second Ctrl-C means it, as in `bty flash`.
    if (isChar(key, 'y', 'Y') || key.name === 'ctrl-c') {
      return [{ ...s, askCancel: false, cancelling: true }, [{ type: 'cancelFlash' }]];
    }
    return [{ ...s, askCancel: false }, []];
  }
  if (key.name === 'ctrl-c' || key.name === 'escape' || isChar(key, 'q')) {
    return [{ ...s, askCancel: true }, []];
  }
  return [s, []];
}

function onResultKey(s: WizardState, key: WizardKey): Step {
  const outcome = s.outcome;
  if (!outcome) return [s, []];
  if (isChar(key, 'q')) return [s, [{ type: 'quit' }]];
  if (isChar(key, 'a')) {
    return arrive(s, { ...s, outcome: null, image: null, disk: null });
  }
  if (key.name === 'escape') return arrive(s, back(s));
  // Reboot is its own key, never Enter: the wizard may run on a workstation writing a USB stick.
  if (outcome.ok && isChar(key, 'b')) {
    const notice = s.noReboot ? 'Reboot skipped (--no-reboot); leaving.' : 'Rebooting now...';
    return [{ ...s, notice }, [{ type: 'reboot' }]];
  }
  if (!outcome.ok && key.name === 'enter') {
    // A changed disk is picked again from a fresh list: the old row describes another device.
    return arrive(s, { ...s, outcome: null, disk: outcome.diskChanged ? null : s.disk });
  }
  const keys = outcome.ok ? 'b, a, Esc or q' : 'Enter, a, Esc or q';
  return [{ ...s, notice: `Press ${keys}.` }, []];
}
