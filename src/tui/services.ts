/**
 * What the wizard's effects do on a real machine: list the image root and a catalog, list disks,
 * probe a plan, flash, reboot. The screens only see the `WizardServices` interface, so tests
 * drive them with fakes.
 */
import { loadCatalog } from '../catalog/load.ts';
import { mergeImageRows, type PickerRow } from '../catalog/merge.ts';
import { asBtyError } from '../core/errors.ts';
import type { FlashProgress } from '../core/progress.ts';
import { readFile } from 'node:fs/promises';
import { listDisks, type Disk } from '../flash/disks.ts';
import { flash } from '../flash/engine.ts';
import { imageRoot, listLocalImages } from '../flash/images.ts';
import { prepareFlash, type FlashPlan } from '../flash/plan.ts';
import { loopIdentity, loopIdentityEnabled } from '../agent/disks.ts';
import {
  CATALOG_ERROR_PREFIX,
  type DiskIdentity,
  type FlashOutcome,
  type WizardDisk,
} from './state.ts';

export interface FlashChoice {
  image: PickerRow;
  disk: WizardDisk;
  readBack: boolean;
}

export interface WizardServices {
  /** The image root's files and the catalog's entries; a catalog failure is `error`, not a throw. */
  loadImages(catalog: string | null): Promise<{ rows: PickerRow[]; error: string | null }>;
  /** Whole disks, the refused ones included with their reasons. */
  loadDisks(): Promise<WizardDisk[]>;
  plan(choice: FlashChoice): Promise<FlashPlan>;
  flash(
    choice: FlashChoice,
    onProgress: (p: FlashProgress) => void,
    signal: AbortSignal,
  ): Promise<FlashOutcome>;
  reboot(log: (line: string) => void): Promise<void>;
}

/** The image's path (local rows) or URL (catalog rows). */
export function imageSource(row: PickerRow): string {
  return row.path ?? row.url ?? row.name;
}

/** The file attached to a loop device, or null (not a loop, detached, unreadable). */
export async function loopBackingFile(
  name: string,
  sysBlock = '/sys/block',
): Promise<string | null> {
  try {
    const backing = (await readFile(`${sysBlock}/${name}/loop/backing_file`, 'utf8'))
      .trim()
      // The kernel appends this when the file was unlinked while attached: still the same file.
      .replace(/ \(deleted\)$/, '');
    return backing === '' ? null : backing;
  } catch {
    return null;
  }
}

/** The identity a listed disk was confirmed with (fixtures without one: its listed fields). */
export function identityOf(disk: WizardDisk): DiskIdentity {
  return (
    disk.identity ?? {
      serial: disk.serial,
      wwn: disk.wwn,
      size_bytes: disk.size_bytes,
      backing_file: null,
    }
  );
}

const IDENTITY_LABELS: Array<[keyof DiskIdentity, string]> = [
  ['serial', 'serial'],
  ['wwn', 'WWN'],
  ['size_bytes', 'size'],
  ['backing_file', 'backing file'],
];

/** What differs between the confirmed identity and the one found now; empty when the same. */
export function identityChanges(confirmed: DiskIdentity, now: DiskIdentity): string[] {
  const show = (v: string | number | null) => (v === null ? 'none' : String(v));
  return IDENTITY_LABELS.filter(([key]) => confirmed[key] !== now[key]).map(
    ([key, label]) => `${label} ${show(confirmed[key])} -> ${show(now[key])}`,
  );
}

export interface ServiceDeps {
  noReboot?: boolean;
  /** The flash engine (tests pass a fake that calls `confirm`). */
  flash?: typeof flash;
  /** Where loop devices' backing files are read (tests: a temporary folder). */
  sysBlock?: string;
}

export function realServices(
  env: NodeJS.ProcessEnv = process.env,
  { noReboot = false, flash: runFlash = flash, sysBlock = '/sys/block' }: ServiceDeps = {},
): WizardServices {
  const withLoops = loopIdentityEnabled(env);
  return {
    async loadImages(catalog) {
      const local = await listLocalImages(imageRoot(env));
      if (catalog === null) return { rows: mergeImageRows(local, null), error: null };
      try {
        return { rows: mergeImageRows(local, await loadCatalog(catalog)), error: null };
      } catch (err) {
        return {
          rows: mergeImageRows(local, null),
          error: `${CATALOG_ERROR_PREFIX}${asBtyError(err).message}`,
        };
      }
    },

    async loadDisks() {
      const all = await listDisks({ all: true });
      const shown: WizardDisk[] = [];
      const identity = (disk: Disk, backing_file: string | null): DiskIdentity => ({
        serial: disk.serial,
        wwn: disk.wwn,
        size_bytes: disk.size_bytes,
        backing_file,
      });
      for (const disk of all) {
        if (disk.type === 'disk') shown.push({ ...disk, identity: identity(disk, null) });
        // Loop devices only under the agent's explicit test opt-in (docs/wizard.md).
        else if (disk.type === 'loop' && withLoops && disk.size_bytes > 0) {
          shown.push({
            ...disk,
            serial: disk.serial ?? (await loopIdentity(disk.name, sysBlock)),
            identity: identity(disk, await loopBackingFile(disk.name, sysBlock)),
          });
        }
      }
      return shown;
    },

    async plan({ image, disk, readBack }) {
      const { plan } = await prepareFlash({
        source: imageSource(image),
        target: disk.path,
        formatHint: image.format,
        sha256: image.sha256,
        verify: readBack,
      });
      return plan;
    },

    async flash({ image, disk, readBack }, onProgress, signal) {
      // The engine probes the path afresh; the operator confirmed a device. Checked with the
      // validated plan, after the last wait and before the first byte.
      const confirmed = identityOf(disk);
      let changes: string[] = [];
      const confirm = async (plan: FlashPlan): Promise<boolean> => {
        const now: DiskIdentity = {
          serial: plan.target.serial,
          wwn: plan.target.wwn,
          size_bytes: plan.target.size_bytes,
          backing_file: disk.type === 'loop' ? await loopBackingFile(disk.name, sysBlock) : null,
        };
        changes = identityChanges(confirmed, now);
        return changes.length === 0;
      };
      try {
        const result = await runFlash({
          source: imageSource(image),
          target: disk.path,
          formatHint: image.format,
          sha256: image.sha256,
          verify: readBack,
          signal,
          onProgress,
          confirm,
        });
        return {
          ok: true,
          target: disk.path,
          imageBytes: result.image_bytes,
          bytesWritten: result.bytes_written,
          seconds: result.seconds,
          sha256: result.sha256,
          sha256Verified: result.sha256_verified,
          readBackVerified: result.verified,
          resumes: result.resumes,
        };
      } catch (err) {
        const failure = asBtyError(err);
        if (changes.length > 0 && failure.code === 'BTY_ERR_NOT_CONFIRMED') {
          return {
            ok: false,
            cancelled: false,
            diskChanged: true,
            message: `${disk.path} is no longer the disk you confirmed (${changes.join(', ')}); nothing was written`,
            hint: 'Check which disk is attached, then pick it again from the refreshed list.',
          };
        }
        return {
          ok: false,
          cancelled: failure.code === 'BTY_ERR_CANCELLED',
          message: failure.message,
          hint: failure.hint,
        };
      }
    },

    async reboot(log) {
      if (noReboot) {
        log('bty: reboot skipped (--no-reboot)');
        return;
      }
      const { rebootMachine } = await import('../agent/reboot.ts');
      await rebootMachine(log);
    },
  };
}
