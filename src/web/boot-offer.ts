/**
 * bty-web's boot-mode state machine (upstream-web §7), as pure functions: every transition of a
 * machine's boot cycle is decided here from the stored record, the catalog entry and the time,
 * and the routes only load, call, store and respond. Nothing here does I/O or reads the clock.
 *
 * The cycle in one paragraph: `boot_mode` is the operator's intent and is never rewritten by the
 * server. For the live-env modes (both flash modes and inventory) the one-shot bit
 * `saw_flasher_boot` is armed when the live env fetches its kernel or initrd with `?mac=`
 * (proof it booted, not that it finished); the completion signal (`last_flashed_at` for the
 * flash modes, `known_disks_at` for inventory) says the work finished. Armed + complete ⇒ the
 * next PXE contact boots the local disk; armed without completion ⇒ the box crashed or failed
 * mid-cycle, so the live env is served again (never a half-written disk).
 *
 * One deliberate fix over upstream: arming also stamps `armed_at`, and a completion signal only
 * counts when it is not older than that stamp. Upstream only checks that the signal is set, so
 * on the second flash-always cycle the previous cycle's `last_flashed_at` made a crashed flasher
 * boot its half-written disk. A record without `armed_at` (a repository that does not store it,
 * or a row imported from upstream) gets upstream's presence-only test.
 *
 * Mode `ramboot` (§7.5/§7.7) is not implemented yet and is treated like any unknown mode: the
 * safe "unknown" disk boot, with the reason in the offer details.
 */

/** The modes this server acts on (§7.1), without `ramboot`, which is out of scope for now. */
export const SUPPORTED_BOOT_MODES = [
  'ipxe-exit',
  'bty-flash-always',
  'bty-flash-once',
  'bty-tui',
  'bty-inventory',
] as const;
export type BootMode = (typeof SUPPORTED_BOOT_MODES)[number];
export type FlashMode = 'bty-flash-always' | 'bty-flash-once';
/** The modes whose live-env cycle the `?mac=` artifact fetch arms (§6.4). */
export type ArmingMode = FlashMode | 'bty-inventory';

/** The mode a machine gets when its first PXE or plan contact creates its row (§7.2). */
export const DISCOVERY_BOOT_MODE = 'bty-inventory' satisfies BootMode;
/** The BIOS drive sanboot uses when the machine has none stored. */
export const DEFAULT_SANBOOT_DRIVE = '0x80';

export function isSupportedBootMode(mode: string): mode is BootMode {
  return (SUPPORTED_BOOT_MODES as readonly string[]).includes(mode);
}

export function isFlashMode(mode: string): mode is FlashMode {
  return mode === 'bty-flash-always' || mode === 'bty-flash-once';
}

export function isArmingMode(mode: string): mode is ArmingMode {
  return isFlashMode(mode) || mode === 'bty-inventory';
}

/** The stored machine fields the boot cycle reads. Timestamps are server times. */
export interface BootMachine {
  /** Canonical MAC (`aa:bb:cc:dd:ee:ff`); used in event subjects and summaries only. */
  mac: string;
  /** As stored: may be a mode this server does not know (decided as "unknown"). */
  boot_mode: string;
  /** 64-hex binding key; null or '' means unbound. */
  bty_image_ref: string | null;
  /** Operator-picked disk serial; null or '' means none. */
  target_disk_serial: string | null;
  /** `0x80`-style BIOS drive; null or '' means {@link DEFAULT_SANBOOT_DRIVE}. */
  sanboot_drive: string | null;
  saw_flasher_boot: boolean;
  /** When the bit last went 0→1; absent or null falls back to upstream's presence-only test. */
  armed_at?: Date | null;
  /** Completion signal of the flash modes (set by status=done). */
  last_flashed_at: Date | null;
  /** Completion signal of inventory (set by the inventory POST). */
  known_disks_at: Date | null;
}

/**
 * Writes the server may make to a machine row. Deliberately lacks `boot_mode`, `bty_image_ref`
 * and `target_disk_serial`: the open PXE plane never changes bindings.
 */
export interface MachineStateChange {
  saw_flasher_boot?: boolean;
  armed_at?: Date;
  last_flashed_at?: Date | null;
  known_disks_at?: Date | null;
  last_seen_at?: Date;
  last_seen_ip?: string | null;
  updated_at?: Date;
}

/** The fields of a catalog entry the decision reads (a `CatalogEntry` fits). */
export interface BootCatalogEntry {
  /** Display name; an entry with an empty name is no entry (§7.4). */
  name: string;
  /** The entry's ref when known; an entry whose ref differs from the machine's is ignored. */
  ref?: string | null;
}

// ---------------------------------------------------------------------------------------------
// Offers (§7.4 rows × §7.5 templates)
// ---------------------------------------------------------------------------------------------

/**
 * Which §7.5 template renders the offer, named as `renderIpxeScript` (./ipxe.ts) names its
 * kinds: `live-env` (rows 1, 3), `flash` (row 8; the live-env commands with the binding in the
 * header comments), `disk-boot` (rows 2, 4, 7), `unknown` (row 11: disk boot at 0x80 after a
 * longer pause) and `exit-fallback` (rows 9, 10: back to the firmware boot order).
 */
export type ScriptKind = 'live-env' | 'flash' | 'disk-boot' | 'unknown' | 'exit-fallback';

/** Why a request got the safe "unknown" disk boot. */
export type UnknownOfferReason = 'no_image_ref' | 'unknown_boot_mode';
/** Why a flash mode returned to the firmware instead of flashing. */
export type ExitFallbackReason = 'no_target_disk' | 'orphan_ref';

/** Offer details are stored verbatim in the `netboot.pxe.offered` event, so they are snake_case. */
export type BootOffer =
  | {
      scriptKind: 'live-env';
      offerKind: 'bty-tui';
      details: { offer: 'bty-tui' };
    }
  | {
      scriptKind: 'disk-boot';
      offerKind: 'bty-inventory-ipxe-exit';
      details: { offer: 'ipxe-exit'; sanboot_drive: string; after_inventory: true };
    }
  | {
      scriptKind: 'live-env';
      offerKind: 'bty-inventory';
      details: { offer: 'bty-inventory'; retry_after_armed_no_post?: true };
    }
  | {
      scriptKind: 'disk-boot';
      offerKind: 'ipxe-exit';
      details: { offer: 'ipxe-exit'; sanboot_drive: string };
    }
  | {
      scriptKind: 'disk-boot';
      offerKind: `${FlashMode}-ipxe-exit`;
      details: { offer: 'ipxe-exit'; sanboot_drive: string; ipxe_exit_after_flash: true };
    }
  | {
      scriptKind: 'flash';
      offerKind: FlashMode;
      details: {
        offer: FlashMode;
        bty_image_ref: string;
        image_name: string;
        target_disk_serial: string;
        retry_after_armed_no_done?: true;
      };
    }
  | {
      scriptKind: 'exit-fallback';
      offerKind: 'exit-fallback';
      details: {
        offer: 'exit-fallback';
        bty_image_ref: string;
        reason: 'no_target_disk';
        boot_mode: FlashMode;
      };
    }
  | {
      scriptKind: 'exit-fallback';
      offerKind: 'exit-fallback';
      details: { offer: 'exit-fallback'; bty_image_ref: string; reason: 'orphan_ref' };
    }
  | {
      scriptKind: 'unknown';
      offerKind: 'unknown';
      details: { offer: 'unknown'; reason: UnknownOfferReason };
    };

export type OfferKind = BootOffer['offerKind'];

/** The §7.4 row that matched (rows 5 and 6, ramboot, are not implemented: ramboot hits 11). */
export type DecisionRow = 1 | 2 | 3 | 4 | 7 | 8 | 9 | 10 | 11;

// ---------------------------------------------------------------------------------------------
// Audit-event drafts
// ---------------------------------------------------------------------------------------------

interface PxeEventDraft<K extends string, D> {
  kind: K;
  subject_kind: 'machine';
  subject_id: string;
  actor: 'pxe-client';
  summary: string;
  details: D;
}

export type OfferedEventDetails = BootOffer['details'] & {
  boot_mode: string;
  offer_kind: OfferKind;
};
/**
 * One per `/pxe/{mac}` request. It has no `source_ip` here because the decision does not see
 * the request: the route records the client's IP with it.
 */
export type OfferedEvent = PxeEventDraft<'netboot.pxe.offered', OfferedEventDetails>;
/** Upstream logs the arming without a source IP (`source_ip: null`). */
export type FlasherArmedEvent = PxeEventDraft<
  'netboot.flasher.armed',
  { boot_mode: ArmingMode; artifact: string }
> & { source_ip: null };
export type MachineFlashedEvent = PxeEventDraft<'machine.flashed', null> & {
  source_ip: string | null;
};
export type MachineFlashFailedEvent = PxeEventDraft<
  'machine.flash_failed',
  { reason: string } | null
> & { source_ip: string | null };
export type OrphanSignalEvent = PxeEventDraft<
  'pxe.client.orphan',
  { signal: FlashStatus['status'] }
> & { source_ip: string | null };
export type MachineDiscoveredEvent = PxeEventDraft<
  'machine.discovered',
  {
    bty_image_ref: null;
    boot_mode: typeof DISCOVERY_BOOT_MODE;
    sanboot_drive: null;
    labels: [];
    target_disk_serial: null;
  }
> & { source_ip: string | null };

// ---------------------------------------------------------------------------------------------
// The live-env cycle: completion and crash retry (§7.3)
// ---------------------------------------------------------------------------------------------

/**
 * Where the machine's live-env cycle stands: not armed, armed and finished, or armed without
 * finishing (the live env crashed or failed: serve it again). Null for modes without a cycle.
 */
export type CycleProgress = 'unarmed' | 'completed' | 'incomplete';

export function cycleProgress(machine: BootMachine): CycleProgress | null {
  const mode = machine.boot_mode;
  if (!isArmingMode(mode)) return null;
  if (!machine.saw_flasher_boot) return 'unarmed';
  const signal = isFlashMode(mode) ? machine.last_flashed_at : machine.known_disks_at;
  if (signal === null) return 'incomplete';
  // A signal older than the arming belongs to the previous cycle (the fix described above).
  const armedAt = machine.armed_at ?? null;
  if (armedAt !== null && signal.getTime() < armedAt.getTime()) return 'incomplete';
  return 'completed';
}

export type CrashRetryFlag = 'retry_after_armed_no_done' | 'retry_after_armed_no_post';

/**
 * The flag the re-served live env carries when the previous one was armed but never reported
 * completion: `retry_after_armed_no_done` for the flash modes (no status=done), or
 * `retry_after_armed_no_post` for inventory (no inventory POST). Null when no retry is due.
 */
export function crashRetryFlag(machine: BootMachine): CrashRetryFlag | null {
  if (cycleProgress(machine) !== 'incomplete') return null;
  return isFlashMode(machine.boot_mode) ? 'retry_after_armed_no_done' : 'retry_after_armed_no_post';
}

// ---------------------------------------------------------------------------------------------
// GET /pxe/{mac}: the decision table (§7.4)
// ---------------------------------------------------------------------------------------------

/** The change a disk boot makes when it consumes the one-shot bit. */
export interface BitClearChange {
  saw_flasher_boot: false;
  updated_at: Date;
}

export interface BootDecision {
  row: DecisionRow;
  offer: BootOffer;
  /** Null when the row has no side effect; otherwise apply in the offer's transaction. */
  change: BitClearChange | null;
  event: OfferedEvent;
}

/**
 * Decides what `/pxe/{mac}` serves: §7.4's rows in order, first match wins. `entry` is the
 * catalog entry looked up by the machine's ref (null when there is none).
 */
export function decideBootOffer(
  machine: BootMachine,
  entry: BootCatalogEntry | null,
  now: Date,
): BootDecision {
  const mode = machine.boot_mode;
  const mac = machine.mac;
  const drive = nonEmpty(machine.sanboot_drive) ?? DEFAULT_SANBOOT_DRIVE;
  const clearBit: BitClearChange = { saw_flasher_boot: false, updated_at: now };
  const decided = (
    row: DecisionRow,
    offer: BootOffer,
    change: BitClearChange | null,
    summary: string,
  ): BootDecision => ({ row, offer, change, event: offeredEvent(machine, offer, summary) });

  // Row 1: the operator picks the image in the live env's wizard.
  if (mode === 'bty-tui') {
    return decided(
      1,
      { scriptKind: 'live-env', offerKind: 'bty-tui', details: { offer: 'bty-tui' } },
      null,
      `${mac} offered the live environment (bty-tui wizard)`,
    );
  }

  if (mode === 'bty-inventory') {
    const progress = cycleProgress(machine);
    // Row 2: the live env booted and posted its inventory: boot the disk once, re-arm next time.
    if (progress === 'completed') {
      return decided(
        2,
        {
          scriptKind: 'disk-boot',
          offerKind: 'bty-inventory-ipxe-exit',
          details: { offer: 'ipxe-exit', sanboot_drive: drive, after_inventory: true },
        },
        clearBit,
        `${mac} offered local disk boot (drive ${drive}) after inventory`,
      );
    }
    // Row 3: (re-)run the inventory live env; a crashed run is retried, flagged as such.
    const retry = progress === 'incomplete';
    return decided(
      3,
      {
        scriptKind: 'live-env',
        offerKind: 'bty-inventory',
        details: retry
          ? { offer: 'bty-inventory', retry_after_armed_no_post: true }
          : { offer: 'bty-inventory' },
      },
      null,
      `${mac} offered the live environment for inventory` +
        (retry ? ' (retry: armed but no inventory was posted)' : ''),
    );
  }

  // Row 4: boot the local disk, even when a ref is bound.
  if (mode === 'ipxe-exit') {
    return decided(
      4,
      {
        scriptKind: 'disk-boot',
        offerKind: 'ipxe-exit',
        details: { offer: 'ipxe-exit', sanboot_drive: drive },
      },
      null,
      `${mac} offered local disk boot (drive ${drive})`,
    );
  }

  // Rows 5 and 6 (ramboot) are not implemented: ramboot falls through to row 11.

  const ref = nonEmpty(machine.bty_image_ref);
  if (isFlashMode(mode) && ref !== null) {
    const found = entryForRef(ref, entry);
    const serial = nonEmpty(machine.target_disk_serial);
    if (found !== null && serial !== null) {
      const progress = cycleProgress(machine);
      // Row 7: flashed this cycle: boot the fresh disk. flash-always consumes the bit so the
      // next contact flashes again; flash-once keeps it and boots the disk from now on.
      if (progress === 'completed') {
        return decided(
          7,
          {
            scriptKind: 'disk-boot',
            offerKind: `${mode}-ipxe-exit`,
            details: { offer: 'ipxe-exit', sanboot_drive: drive, ipxe_exit_after_flash: true },
          },
          mode === 'bty-flash-always' ? clearBit : null,
          `${mac} offered local disk boot (drive ${drive}) after flashing ${found.name}`,
        );
      }
      // Row 8: flash. Armed without status=done means the flasher died: flash again rather
      // than boot a half-written disk.
      const retry = progress === 'incomplete';
      const details = {
        offer: mode,
        bty_image_ref: ref,
        image_name: found.name,
        target_disk_serial: serial,
      };
      return decided(
        8,
        {
          scriptKind: 'flash',
          offerKind: mode,
          details: retry ? { ...details, retry_after_armed_no_done: true } : details,
        },
        null,
        `${mac} offered flashing ${found.name} (${shortRef(ref)}) to disk ${serial}` +
          (retry ? ' (retry: armed but no status=done)' : ''),
      );
    }
    // Row 9: never guess a disk to overwrite.
    if (found !== null) {
      return decided(
        9,
        {
          scriptKind: 'exit-fallback',
          offerKind: 'exit-fallback',
          details: {
            offer: 'exit-fallback',
            bty_image_ref: ref,
            reason: 'no_target_disk',
            boot_mode: mode,
          },
        },
        null,
        `${mac} not flashed: ${mode} with ${found.name} (${shortRef(ref)}) has no target disk ` +
          'serial; returning to firmware boot',
      );
    }
    // Row 10: the bound ref is not in the catalog (removed, or never cached).
    return decided(
      10,
      {
        scriptKind: 'exit-fallback',
        offerKind: 'exit-fallback',
        details: { offer: 'exit-fallback', bty_image_ref: ref, reason: 'orphan_ref' },
      },
      null,
      `${mac} not flashed: image ref ${shortRef(ref)} is not in the catalog; ` +
        'returning to firmware boot',
    );
  }

  // Row 11: a flash mode without a ref, or a mode this server does not handle.
  const reason: UnknownOfferReason = isFlashMode(mode) ? 'no_image_ref' : 'unknown_boot_mode';
  return decided(
    11,
    {
      scriptKind: 'unknown',
      offerKind: 'unknown',
      details: { offer: 'unknown', reason },
    },
    null,
    reason === 'no_image_ref'
      ? `${mac} has no usable assignment: ${mode} without an image ref; booting local disk ` +
          `(drive ${DEFAULT_SANBOOT_DRIVE})`
      : `${mac} has no usable assignment: boot_mode ${JSON.stringify(mode)} is not handled ` +
          `by this server; booting local disk (drive ${DEFAULT_SANBOOT_DRIVE})`,
  );
}

function offeredEvent(machine: BootMachine, offer: BootOffer, summary: string): OfferedEvent {
  return {
    kind: 'netboot.pxe.offered',
    subject_kind: 'machine',
    subject_id: machine.mac,
    actor: 'pxe-client',
    summary,
    details: { boot_mode: machine.boot_mode, ...offer.details, offer_kind: offer.offerKind },
  };
}

// ---------------------------------------------------------------------------------------------
// GET|HEAD /boot/{name}?mac=: arming (§6.4)
// ---------------------------------------------------------------------------------------------

export type ArmingChange =
  | { last_seen_at: Date; last_seen_ip: string | null }
  | {
      last_seen_at: Date;
      last_seen_ip: string | null;
      saw_flasher_boot: true;
      armed_at: Date;
      updated_at: Date;
    };

export interface ArmingResult {
  /** Null only when no row exists for the MAC (arming never creates machines). */
  change: ArmingChange | null;
  /** Only the 0→1 transition is logged; the repeat fetches of one boot are not. */
  event: FlasherArmedEvent | null;
}

/**
 * The effect of a `?mac=`-tagged artifact fetch. Which artifact it is does not matter: the
 * live env's kernel and initrd URLs carry `?mac=` (the squashfs URL deliberately does not) and
 * whichever arrives first arms; `artifact` is only recorded in the event. The fetch always
 * refreshes last-seen (not `updated_at`); it arms only the live-env modes, only from 0.
 */
export function armOnBootFetch(
  machine: BootMachine | null,
  artifact: string,
  now: Date,
  clientIp: string | null,
): ArmingResult {
  if (machine === null) return { change: null, event: null };
  const seen = { last_seen_at: now, last_seen_ip: clientIp };
  const mode = machine.boot_mode;
  if (!isArmingMode(mode) || machine.saw_flasher_boot) return { change: seen, event: null };
  return {
    change: { ...seen, saw_flasher_boot: true, armed_at: now, updated_at: now },
    event: {
      kind: 'netboot.flasher.armed',
      subject_kind: 'machine',
      subject_id: machine.mac,
      actor: 'pxe-client',
      source_ip: null,
      summary: `${machine.mac} booted the live environment (${mode}): fetched ${artifact}`,
      details: { boot_mode: mode, artifact },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// POST /pxe/{mac}/status: the terminal signal (§6.2)
// ---------------------------------------------------------------------------------------------

/** The validated status body (the route refuses other statuses and keys with 422). */
export interface FlashStatus {
  status: 'done' | 'failed';
  reason?: string;
}

export type FlashStatusResult =
  | {
      outcome: 'recorded';
      change: {
        last_flashed_at?: Date;
        last_seen_at: Date;
        last_seen_ip: string | null;
        updated_at: Date;
      };
      event: MachineFlashedEvent | MachineFlashFailedEvent;
    }
  /** No row for the MAC: log the orphan signal and answer 404; nothing is stored. */
  | { outcome: 'orphan'; change: null; event: OrphanSignalEvent };

/**
 * `done` stamps `last_flashed_at` (the flash modes' completion signal); `failed` only refreshes
 * last-seen, so the next PXE contact retries the flash. Neither touches `boot_mode` or the bit:
 * clearing the bit is the disk-boot offer's job (§7.3).
 */
export function applyFlashStatus(
  mac: string,
  machine: BootMachine | null,
  report: FlashStatus,
  now: Date,
  clientIp: string | null,
): FlashStatusResult {
  const subject = {
    subject_kind: 'machine',
    subject_id: mac,
    actor: 'pxe-client',
    source_ip: clientIp,
  } as const;
  if (machine === null) {
    return {
      outcome: 'orphan',
      change: null,
      event: {
        ...subject,
        kind: 'pxe.client.orphan',
        summary: `status=${report.status} from ${mac}, which has no machine record`,
        details: { signal: report.status },
      },
    };
  }
  const seen = { last_seen_at: now, last_seen_ip: clientIp, updated_at: now };
  if (report.status === 'done') {
    return {
      outcome: 'recorded',
      change: { last_flashed_at: now, ...seen },
      event: {
        ...subject,
        kind: 'machine.flashed',
        summary: `${mac} reported a completed flash`,
        details: null,
      },
    };
  }
  const reason = (report.reason ?? '').trim();
  return {
    outcome: 'recorded',
    change: seen,
    event: {
      ...subject,
      kind: 'machine.flash_failed',
      summary: `${mac} reported a failed flash` + (reason === '' ? '' : `: ${reason}`),
      details: reason === '' ? null : { reason },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// PUT /machines/{mac} and the UI form: the policy reset (§7.3)
// ---------------------------------------------------------------------------------------------

export type PolicyFields = Pick<BootMachine, 'boot_mode' | 'bty_image_ref' | 'target_disk_serial'>;

/** True when an operator edit changes what the boot cycle does (mode, ref or target serial). */
export function policyChanged(before: PolicyFields, after: PolicyFields): boolean {
  return (
    before.boot_mode !== after.boot_mode ||
    (before.bty_image_ref ?? '') !== (after.bty_image_ref ?? '') ||
    (before.target_disk_serial ?? '') !== (after.target_disk_serial ?? '')
  );
}

export interface PolicyResetChange {
  saw_flasher_boot: false;
  last_flashed_at: null;
  known_disks_at: null;
}

/**
 * What an operator upsert does to the cycle: a policy change starts a fresh one (bit cleared,
 * the old completion signals dropped; the disk list itself is kept). Labels or sanboot-drive
 * edits alone return null, so relabelling mid-flash never aborts a cycle. A create (no previous
 * row) starts from the same clean state.
 */
export function policyResetChange(
  before: PolicyFields | null,
  after: PolicyFields,
): PolicyResetChange | null {
  if (before !== null && !policyChanged(before, after)) return null;
  return { saw_flasher_boot: false, last_flashed_at: null, known_disks_at: null };
}

// ---------------------------------------------------------------------------------------------
// Discovery (§7.2)
// ---------------------------------------------------------------------------------------------

/**
 * The row a first contact inserts and the `machine.discovered` event logged by the request
 * that actually inserted it (the route's insert-if-absent decides which one that is). `via`
 * names the route in the summary; the details are identical for both.
 */
export function discoveredMachine(
  mac: string,
  clientIp: string | null,
  via: 'pxe' | 'plan',
): { machine: BootMachine; event: MachineDiscoveredEvent } {
  const path = via === 'pxe' ? '/pxe' : `/pxe/${mac}/plan`;
  return {
    machine: {
      mac,
      boot_mode: DISCOVERY_BOOT_MODE,
      bty_image_ref: null,
      target_disk_serial: null,
      sanboot_drive: null,
      saw_flasher_boot: false,
      armed_at: null,
      last_flashed_at: null,
      known_disks_at: null,
    },
    event: {
      kind: 'machine.discovered',
      subject_kind: 'machine',
      subject_id: mac,
      actor: 'pxe-client',
      source_ip: clientIp,
      summary: `${mac} first contacted ${path} from ${clientIp ?? 'unknown IP'}`,
      details: {
        bty_image_ref: null,
        boot_mode: DISCOVERY_BOOT_MODE,
        sanboot_drive: null,
        labels: [],
        target_disk_serial: null,
      },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// GET /pxe/{mac}/plan: the live env's dispatch (§8)
// ---------------------------------------------------------------------------------------------

export type PlanDispatch<E extends BootCatalogEntry> =
  | {
      mode: 'flash';
      offerKind: `plan:flash:${FlashMode}`;
      bootMode: FlashMode;
      bty_image_ref: string;
      target_disk_serial: string;
      /** The route builds the plan's image URL, name, sha and format from it. */
      entry: E;
    }
  | {
      mode: 'interactive';
      offerKind: 'plan:interactive:flash-unresolved';
      reason: ExitFallbackReason;
    }
  | { mode: 'interactive'; offerKind: 'plan:interactive:tui' }
  | { mode: 'inventory'; offerKind: 'plan:inventory' }
  | { mode: 'exit'; offerKind: `plan:exit:${string}` };

/**
 * Which plan the live env gets. The plan reads the binding only: it never looks at or changes
 * the bit (the `/pxe/{mac}` offer already decided whether the live env should run). A flash
 * mode that cannot flash (no serial, orphan ref) hands the live env the interactive wizard;
 * everything else, ramboot and unknown modes included, is told to exit.
 */
export function decidePlanDispatch<E extends BootCatalogEntry>(
  machine: BootMachine,
  entry: E | null,
): PlanDispatch<E> {
  const mode = machine.boot_mode;
  const ref = nonEmpty(machine.bty_image_ref);
  if (isFlashMode(mode) && ref !== null) {
    const found = entryForRef(ref, entry);
    const serial = nonEmpty(machine.target_disk_serial);
    if (found !== null && serial !== null) {
      return {
        mode: 'flash',
        offerKind: `plan:flash:${mode}`,
        bootMode: mode,
        bty_image_ref: ref,
        target_disk_serial: serial,
        entry: found,
      };
    }
    return {
      mode: 'interactive',
      offerKind: 'plan:interactive:flash-unresolved',
      reason: found === null ? 'orphan_ref' : 'no_target_disk',
    };
  }
  if (mode === 'bty-tui') return { mode: 'interactive', offerKind: 'plan:interactive:tui' };
  if (mode === 'bty-inventory') return { mode: 'inventory', offerKind: 'plan:inventory' };
  return { mode: 'exit', offerKind: `plan:exit:${mode}` };
}

// ---------------------------------------------------------------------------------------------

function nonEmpty(value: string | null): string | null {
  return value === null || value === '' ? null : value;
}

/** §7.4's "entry found": a named entry, and (when it says) for this very ref. */
function entryForRef<E extends BootCatalogEntry>(ref: string, entry: E | null): E | null {
  if (entry === null || entry.name === '') return null;
  if (entry.ref !== undefined && entry.ref !== null && entry.ref !== ref) return null;
  return entry;
}

function shortRef(ref: string): string {
  return ref.slice(0, 12);
}
