/**
 * What a machine's next PXE boot will do, in plain words. The words describe the offer
 * `decideBootOffer` returns for the machine's stored state, the very decision `/pxe/{mac}`
 * makes, so the page can never promise something the server will not do.
 */
import { DEFAULT_SANBOOT_DRIVE, type BootOffer } from '../boot-offer.ts';

/** How the line is coloured: a flash is about to overwrite a disk; a gate stops one. */
export type NextBootTone = 'flash' | 'live' | 'disk' | 'blocked';

export interface NextBoot {
  text: string;
  tone: NextBootTone;
}

/** A disk of the last inventory, as far as the words need it. */
export interface KnownDisk {
  serial: string | null;
  model: string | null;
}

function driveNote(drive: string): string {
  return drive === DEFAULT_SANBOOT_DRIVE ? '' : `, drive ${drive}`;
}

/**
 * The sentence for `offer`. `bootMode` is the stored mode (the "unknown" offer does not carry
 * it); `disks` is the last inventory, which names the target disk's model.
 */
export function describeNextBoot(
  offer: BootOffer,
  bootMode: string,
  disks: readonly KnownDisk[],
): NextBoot {
  switch (offer.offerKind) {
    case 'bty-tui':
      return {
        text: 'next boot: live environment with the interactive wizard (bty-tui)',
        tone: 'live',
      };
    case 'bty-inventory': {
      const retry =
        offer.details.retry_after_armed_no_post === true
          ? ' — again: the last run booted but never reported its disks'
          : '';
      return {
        text: `next boot: live environment to report disks (bty-inventory)${retry}`,
        tone: 'live',
      };
    }
    case 'bty-inventory-ipxe-exit':
      return {
        text:
          `next boot: boot the local disk${driveNote(offer.details.sanboot_drive)} — the inventory ` +
          'is done; the boot after it reports disks again (bty-inventory)',
        tone: 'disk',
      };
    case 'ipxe-exit':
      return {
        text: `next boot: boot the local disk${driveNote(offer.details.sanboot_drive)} (ipxe-exit)`,
        tone: 'disk',
      };
    case 'bty-flash-once-ipxe-exit':
    case 'bty-flash-always-ipxe-exit': {
      const drive = driveNote(offer.details.sanboot_drive);
      return {
        text:
          offer.offerKind === 'bty-flash-once-ipxe-exit'
            ? `next boot: boot the freshly flashed local disk${drive} (bty-flash-once is done)`
            : `next boot: boot the freshly flashed local disk${drive}; the boot after it flashes ` +
              'again (bty-flash-always)',
        tone: 'disk',
      };
    }
    case 'bty-flash-once':
    case 'bty-flash-always': {
      const { image_name, target_disk_serial } = offer.details;
      const disk = disks.find((k) => k.serial === target_disk_serial);
      const model =
        disk === undefined ? ' (not in the last inventory)' : disk.model ? ` (${disk.model})` : '';
      const retry = offer.details.retry_after_armed_no_done
        ? ' — again: the last flash never reported done'
        : '';
      return {
        text: `next boot: flash ${image_name} onto ${target_disk_serial}${model}${retry}`,
        tone: 'flash',
      };
    }
    case 'exit-fallback':
      if (offer.details.reason === 'no_target_disk') {
        return {
          text:
            'next boot: nothing to flash — flash mode without a target disk; the machine exits ' +
            'to its local disk',
          tone: 'blocked',
        };
      }
      return {
        text:
          `next boot: nothing to flash — the bound image ${offer.details.bty_image_ref.slice(0, 12)} ` +
          'is not in the catalog; the machine exits to its local disk',
        tone: 'blocked',
      };
    case 'unknown':
      return {
        text:
          offer.details.reason === 'no_image_ref'
            ? `next boot: nothing to flash — ${bootMode} without an image; the machine boots ` +
              `its local disk (drive ${DEFAULT_SANBOOT_DRIVE})`
            : `next boot: boot the local disk (drive ${DEFAULT_SANBOOT_DRIVE}) — mode ` +
              `"${bootMode}" is not handled by this server`,
        tone: 'blocked',
      };
  }
}
