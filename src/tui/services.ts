/**
 * What the wizard's effects do on a real machine: list the image root and a catalog, list disks,
 * probe a plan, flash, reboot. The screens only see the `WizardServices` interface, so tests
 * drive them with fakes.
 */
import { loadCatalog } from '../catalog/load.ts';
import { mergeImageRows, type PickerRow } from '../catalog/merge.ts';
import { asBtyError } from '../core/errors.ts';
import type { FlashProgress } from '../core/progress.ts';
import { listDisks, type Disk } from '../flash/disks.ts';
import { flash } from '../flash/engine.ts';
import { imageRoot, listLocalImages } from '../flash/images.ts';
import { prepareFlash, type FlashPlan } from '../flash/plan.ts';
import { loopIdentity, loopIdentityEnabled } from '../agent/disks.ts';
import { CATALOG_ERROR_PREFIX, type FlashOutcome } from './state.ts';

export interface FlashChoice {
  image: PickerRow;
  disk: Disk;
  readBack: boolean;
}

export interface WizardServices {
  /** The image root's files and the catalog's entries; a catalog failure is `error`, not a throw. */
  loadImages(catalog: string | null): Promise<{ rows: PickerRow[]; error: string | null }>;
  /** Whole disks, the refused ones included with their reasons. */
  loadDisks(): Promise<Disk[]>;
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

export function realServices(
  env: NodeJS.ProcessEnv = process.env,
  { noReboot = false }: { noReboot?: boolean } = {},
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
      const shown: Disk[] = [];
      for (const disk of all) {
        if (disk.type === 'disk') shown.push(disk);
        // Loop devices only under the agent's explicit test opt-in (docs/wizard.md).
        else if (disk.type === 'loop' && withLoops && disk.size_bytes > 0) {
          shown.push({ ...disk, serial: disk.serial ?? (await loopIdentity(disk.name)) });
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
      try {
        const result = await flash({
          source: imageSource(image),
          target: disk.path,
          formatHint: image.format,
          sha256: image.sha256,
          verify: readBack,
          signal,
          onProgress,
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
