import { describe, expect, it } from 'vitest';
import {
  applyFlashStatus,
  armOnBootFetch,
  crashRetryFlag,
  cycleProgress,
  decideBootOffer,
  decidePlanDispatch,
  discoveredMachine,
  policyChanged,
  policyResetChange,
  type BootCatalogEntry,
  type BootDecision,
  type BootMachine,
  type MachineStateChange,
  type OfferKind,
  type ScriptKind,
} from '../../src/web/boot-offer.ts';
import { IPXE_SCRIPT_KINDS } from '../../src/web/ipxe.ts';

const MAC = '52:54:00:12:34:56';
const REF = 'ab'.repeat(32);
const OTHER_REF = 'cd'.repeat(32);
const SERIAL = 'S3Z9NB0K123456';
const ENTRY: BootCatalogEntry = { name: 'debian-13.img.xz', ref: REF };

const T0 = new Date('2025-01-01T00:00:00Z');
const at = (seconds: number) => new Date(T0.getTime() + seconds * 1000);

function machine(overrides: Partial<BootMachine> = {}): BootMachine {
  return {
    mac: MAC,
    boot_mode: 'ipxe-exit',
    bty_image_ref: null,
    target_disk_serial: null,
    sanboot_drive: null,
    saw_flasher_boot: false,
    armed_at: null,
    last_flashed_at: null,
    known_disks_at: null,
    ...overrides,
  };
}

const flash = (overrides: Partial<BootMachine> = {}) =>
  machine({
    boot_mode: 'bty-flash-always',
    bty_image_ref: REF,
    target_disk_serial: SERIAL,
    ...overrides,
  });

const NOW = at(1000);
const CLEAR = { saw_flasher_boot: false, updated_at: NOW };

interface Row {
  name: string;
  machine: BootMachine;
  entry: BootCatalogEntry | null;
  row: BootDecision['row'];
  scriptKind: ScriptKind;
  offerKind: OfferKind;
  details: Record<string, unknown>;
  change: MachineStateChange | null;
}

// One entry per §7.4 row (named after it), plus the variants each row's condition covers.
const TABLE: Row[] = [
  {
    name: 'row 1: bty-tui chains the live env (even armed, with a ref bound)',
    machine: machine({ boot_mode: 'bty-tui', bty_image_ref: REF, saw_flasher_boot: true }),
    entry: ENTRY,
    row: 1,
    scriptKind: 'live-env',
    offerKind: 'bty-tui',
    details: { offer: 'bty-tui' },
    change: null,
  },
  {
    name: 'row 2: inventory armed and posted boots the disk and clears the bit',
    machine: machine({
      boot_mode: 'bty-inventory',
      saw_flasher_boot: true,
      armed_at: at(10),
      known_disks_at: at(20),
    }),
    entry: null,
    row: 2,
    scriptKind: 'disk-boot',
    offerKind: 'bty-inventory-ipxe-exit',
    details: { offer: 'ipxe-exit', sanboot_drive: '0x80', after_inventory: true },
    change: CLEAR,
  },
  {
    name: 'row 2: the stored sanboot drive is used',
    machine: machine({
      boot_mode: 'bty-inventory',
      sanboot_drive: '0x81',
      saw_flasher_boot: true,
      known_disks_at: at(20),
    }),
    entry: null,
    row: 2,
    scriptKind: 'disk-boot',
    offerKind: 'bty-inventory-ipxe-exit',
    details: { offer: 'ipxe-exit', sanboot_drive: '0x81', after_inventory: true },
    change: CLEAR,
  },
  {
    name: 'row 3: inventory not armed chains the live env',
    machine: machine({ boot_mode: 'bty-inventory' }),
    entry: null,
    row: 3,
    scriptKind: 'live-env',
    offerKind: 'bty-inventory',
    details: { offer: 'bty-inventory' },
    change: null,
  },
  {
    name: 'row 3: inventory not armed but inventoried before (the alternation) chains again',
    machine: machine({ boot_mode: 'bty-inventory', known_disks_at: at(20) }),
    entry: null,
    row: 3,
    scriptKind: 'live-env',
    offerKind: 'bty-inventory',
    details: { offer: 'bty-inventory' },
    change: null,
  },
  {
    name: 'row 3: inventory armed without a POST is retried (retry_after_armed_no_post)',
    machine: machine({ boot_mode: 'bty-inventory', saw_flasher_boot: true, armed_at: at(10) }),
    entry: null,
    row: 3,
    scriptKind: 'live-env',
    offerKind: 'bty-inventory',
    details: { offer: 'bty-inventory', retry_after_armed_no_post: true },
    change: null,
  },
  {
    name: 'row 3: inventory armed after the last POST is retried too (stale signal)',
    machine: machine({
      boot_mode: 'bty-inventory',
      saw_flasher_boot: true,
      known_disks_at: at(5),
      armed_at: at(10),
    }),
    entry: null,
    row: 3,
    scriptKind: 'live-env',
    offerKind: 'bty-inventory',
    details: { offer: 'bty-inventory', retry_after_armed_no_post: true },
    change: null,
  },
  {
    name: 'row 4: ipxe-exit boots the disk (even with a ref bound and the bit set)',
    machine: machine({
      boot_mode: 'ipxe-exit',
      bty_image_ref: REF,
      target_disk_serial: SERIAL,
      saw_flasher_boot: true,
      last_flashed_at: at(20),
    }),
    entry: ENTRY,
    row: 4,
    scriptKind: 'disk-boot',
    offerKind: 'ipxe-exit',
    details: { offer: 'ipxe-exit', sanboot_drive: '0x80' },
    change: null,
  },
  {
    name: 'row 4: an empty sanboot drive means 0x80',
    machine: machine({ sanboot_drive: '' }),
    entry: null,
    row: 4,
    scriptKind: 'disk-boot',
    offerKind: 'ipxe-exit',
    details: { offer: 'ipxe-exit', sanboot_drive: '0x80' },
    change: null,
  },
  {
    name: 'row 7: flash-always armed and done boots the fresh disk and clears the bit',
    machine: flash({ saw_flasher_boot: true, armed_at: at(10), last_flashed_at: at(20) }),
    entry: ENTRY,
    row: 7,
    scriptKind: 'disk-boot',
    offerKind: 'bty-flash-always-ipxe-exit',
    details: { offer: 'ipxe-exit', sanboot_drive: '0x80', ipxe_exit_after_flash: true },
    change: CLEAR,
  },
  {
    name: 'row 7: flash-once armed and done boots the disk and keeps the bit',
    machine: flash({
      boot_mode: 'bty-flash-once',
      sanboot_drive: '0x82',
      saw_flasher_boot: true,
      armed_at: at(10),
      last_flashed_at: at(20),
    }),
    entry: ENTRY,
    row: 7,
    scriptKind: 'disk-boot',
    offerKind: 'bty-flash-once-ipxe-exit',
    details: { offer: 'ipxe-exit', sanboot_drive: '0x82', ipxe_exit_after_flash: true },
    change: null,
  },
  {
    name: 'row 7: a done stamped in the same instant as the arming counts',
    machine: flash({ saw_flasher_boot: true, armed_at: at(10), last_flashed_at: at(10) }),
    entry: ENTRY,
    row: 7,
    scriptKind: 'disk-boot',
    offerKind: 'bty-flash-always-ipxe-exit',
    details: { offer: 'ipxe-exit', sanboot_drive: '0x80', ipxe_exit_after_flash: true },
    change: CLEAR,
  },
  {
    name: 'row 8: flash-always not armed chains the flasher',
    machine: flash(),
    entry: ENTRY,
    row: 8,
    scriptKind: 'flash',
    offerKind: 'bty-flash-always',
    details: {
      offer: 'bty-flash-always',
      bty_image_ref: REF,
      image_name: 'debian-13.img.xz',
      target_disk_serial: SERIAL,
    },
    change: null,
  },
  {
    name: 'row 8: done but not armed (a new cycle) flashes without a retry flag',
    machine: flash({ last_flashed_at: at(20) }),
    entry: ENTRY,
    row: 8,
    scriptKind: 'flash',
    offerKind: 'bty-flash-always',
    details: {
      offer: 'bty-flash-always',
      bty_image_ref: REF,
      image_name: 'debian-13.img.xz',
      target_disk_serial: SERIAL,
    },
    change: null,
  },
  {
    name: 'row 8: flash-once armed without done is re-flashed (retry_after_armed_no_done)',
    machine: flash({ boot_mode: 'bty-flash-once', saw_flasher_boot: true, armed_at: at(10) }),
    entry: ENTRY,
    row: 8,
    scriptKind: 'flash',
    offerKind: 'bty-flash-once',
    details: {
      offer: 'bty-flash-once',
      bty_image_ref: REF,
      image_name: 'debian-13.img.xz',
      target_disk_serial: SERIAL,
      retry_after_armed_no_done: true,
    },
    change: null,
  },
  {
    name: "row 8: armed after the previous cycle's done is re-flashed, not disk-booted",
    machine: flash({ saw_flasher_boot: true, last_flashed_at: at(5), armed_at: at(10) }),
    entry: ENTRY,
    row: 8,
    scriptKind: 'flash',
    offerKind: 'bty-flash-always',
    details: {
      offer: 'bty-flash-always',
      bty_image_ref: REF,
      image_name: 'debian-13.img.xz',
      target_disk_serial: SERIAL,
      retry_after_armed_no_done: true,
    },
    change: null,
  },
  {
    name: 'row 8: an entry without a ref of its own is taken as the lookup result',
    machine: flash(),
    entry: { name: 'plain' },
    row: 8,
    scriptKind: 'flash',
    offerKind: 'bty-flash-always',
    details: {
      offer: 'bty-flash-always',
      bty_image_ref: REF,
      image_name: 'plain',
      target_disk_serial: SERIAL,
    },
    change: null,
  },
  {
    name: 'row 9 (gate): flash mode without a target serial exits to firmware',
    machine: flash({ target_disk_serial: null, saw_flasher_boot: true }),
    entry: ENTRY,
    row: 9,
    scriptKind: 'exit-fallback',
    offerKind: 'exit-fallback',
    details: {
      offer: 'exit-fallback',
      bty_image_ref: REF,
      reason: 'no_target_disk',
      boot_mode: 'bty-flash-always',
    },
    change: null,
  },
  {
    name: 'row 9 (gate): an empty target serial is no serial',
    machine: flash({ boot_mode: 'bty-flash-once', target_disk_serial: '' }),
    entry: ENTRY,
    row: 9,
    scriptKind: 'exit-fallback',
    offerKind: 'exit-fallback',
    details: {
      offer: 'exit-fallback',
      bty_image_ref: REF,
      reason: 'no_target_disk',
      boot_mode: 'bty-flash-once',
    },
    change: null,
  },
  {
    name: 'row 10 (gate): an orphan ref (no catalog entry) exits to firmware',
    machine: flash(),
    entry: null,
    row: 10,
    scriptKind: 'exit-fallback',
    offerKind: 'exit-fallback',
    details: { offer: 'exit-fallback', bty_image_ref: REF, reason: 'orphan_ref' },
    change: null,
  },
  {
    name: 'row 10 (gate): orphan wins over a missing serial',
    machine: flash({ target_disk_serial: null }),
    entry: null,
    row: 10,
    scriptKind: 'exit-fallback',
    offerKind: 'exit-fallback',
    details: { offer: 'exit-fallback', bty_image_ref: REF, reason: 'orphan_ref' },
    change: null,
  },
  {
    name: 'row 10 (gate): an entry with an empty name is no entry',
    machine: flash(),
    entry: { name: '', ref: REF },
    row: 10,
    scriptKind: 'exit-fallback',
    offerKind: 'exit-fallback',
    details: { offer: 'exit-fallback', bty_image_ref: REF, reason: 'orphan_ref' },
    change: null,
  },
  {
    name: "row 10 (gate): an entry for another ref is never flashed to this machine's disk",
    machine: flash(),
    entry: { name: 'other.img', ref: OTHER_REF },
    row: 10,
    scriptKind: 'exit-fallback',
    offerKind: 'exit-fallback',
    details: { offer: 'exit-fallback', bty_image_ref: REF, reason: 'orphan_ref' },
    change: null,
  },
  {
    name: 'row 11: flash mode without a ref is "unknown" (no_image_ref)',
    machine: flash({ bty_image_ref: null }),
    entry: null,
    row: 11,
    scriptKind: 'unknown',
    offerKind: 'unknown',
    details: { offer: 'unknown', reason: 'no_image_ref' },
    change: null,
  },
  {
    name: 'row 11: an empty ref is no ref',
    machine: flash({ boot_mode: 'bty-flash-once', bty_image_ref: '', saw_flasher_boot: true }),
    entry: ENTRY,
    row: 11,
    scriptKind: 'unknown',
    offerKind: 'unknown',
    details: { offer: 'unknown', reason: 'no_image_ref' },
    change: null,
  },
  {
    name: 'row 11: ramboot is not handled yet and is treated as an unknown mode',
    machine: machine({ boot_mode: 'ramboot', bty_image_ref: REF, sanboot_drive: '0x81' }),
    entry: ENTRY,
    row: 11,
    scriptKind: 'unknown',
    offerKind: 'unknown',
    details: { offer: 'unknown', reason: 'unknown_boot_mode' },
    change: null,
  },
  {
    name: 'row 11: an unknown mode gets the safe default',
    machine: machine({ boot_mode: 'bty-flash-sometimes', saw_flasher_boot: true }),
    entry: null,
    row: 11,
    scriptKind: 'unknown',
    offerKind: 'unknown',
    details: { offer: 'unknown', reason: 'unknown_boot_mode' },
    change: null,
  },
  {
    name: 'row 11: modes are matched exactly (no case folding)',
    machine: machine({ boot_mode: 'IPXE-EXIT' }),
    entry: null,
    row: 11,
    scriptKind: 'unknown',
    offerKind: 'unknown',
    details: { offer: 'unknown', reason: 'unknown_boot_mode' },
    change: null,
  },
];

describe('decideBootOffer: the §7.4 decision table', () => {
  it.each(TABLE)('$name', (t) => {
    const decision = decideBootOffer(t.machine, t.entry, NOW);
    expect(decision.row).toBe(t.row);
    expect(decision.offer).toEqual({
      scriptKind: t.scriptKind,
      offerKind: t.offerKind,
      details: t.details,
    });
    expect(decision.change).toEqual(t.change);
    // Exactly one offered event, whose details are {boot_mode, ...offer details, offer_kind}.
    expect(decision.event).toEqual({
      kind: 'netboot.pxe.offered',
      subject_kind: 'machine',
      subject_id: MAC,
      actor: 'pxe-client',
      summary: expect.stringContaining(MAC) as unknown,
      details: { boot_mode: t.machine.boot_mode, ...t.details, offer_kind: t.offerKind },
    });
  });

  it('every script kind is one the iPXE renderer knows', () => {
    const kinds = new Set(TABLE.map((t) => t.scriptKind));
    expect(kinds.size).toBe(5);
    for (const kind of kinds) expect(IPXE_SCRIPT_KINDS).toContain(kind);
  });

  it('every §7.4 row except ramboot (5, 6) is covered by the table', () => {
    expect([...new Set(TABLE.map((t) => t.row))].sort((a, b) => a - b)).toEqual([
      1, 2, 3, 4, 7, 8, 9, 10, 11,
    ]);
  });

  it.each([
    ['row 7', flash({ saw_flasher_boot: true, last_flashed_at: at(20) }), ENTRY, /0x80/],
    [
      'row 8',
      flash(),
      ENTRY,
      new RegExp(`debian-13\\.img\\.xz \\(${REF.slice(0, 12)}\\).*${SERIAL}`),
    ],
    ['row 8 retry', flash({ saw_flasher_boot: true }), ENTRY, /retry: armed but no status=done/],
    ['row 9', flash({ target_disk_serial: null }), ENTRY, /no target disk serial/],
    ['row 10', flash(), null, new RegExp(`${REF.slice(0, 12)} is not in the catalog`)],
    ['row 11 no ref', flash({ bty_image_ref: null }), null, /without an image ref/],
    ['row 11 ramboot', machine({ boot_mode: 'ramboot' }), null, /"ramboot" is not handled/],
  ])('%s: the summary says why', (_name, m, entry, pattern) => {
    expect(decideBootOffer(m, entry, NOW).event.summary).toMatch(pattern);
  });

  it('is pure: frozen inputs, same answer twice, time only from `now`', () => {
    const m = Object.freeze(
      flash({ saw_flasher_boot: true, armed_at: at(1), last_flashed_at: at(2) }),
    );
    const entry = Object.freeze({ ...ENTRY });
    const first = decideBootOffer(m, entry, NOW);
    expect(decideBootOffer(m, entry, NOW)).toEqual(first);
    expect(first.change?.updated_at).toBe(NOW);
  });
});

// ---------------------------------------------------------------------------------------------
// The cycles of §7.4, driven through the helpers the routes call.
// ---------------------------------------------------------------------------------------------

/** A tiny stand-in for the database: a row plus the events the routes would log. */
class Box {
  state: BootMachine;
  events: string[] = [];
  private clock = 0;

  constructor(state: BootMachine) {
    this.state = state;
  }
  private tick(): Date {
    this.clock += 60;
    return at(this.clock);
  }
  private apply(change: MachineStateChange | null): void {
    if (change === null) return;
    const { saw_flasher_boot, armed_at, last_flashed_at, known_disks_at } = change;
    this.state = {
      ...this.state,
      ...(saw_flasher_boot === undefined ? {} : { saw_flasher_boot }),
      ...(armed_at === undefined ? {} : { armed_at }),
      ...(last_flashed_at === undefined ? {} : { last_flashed_at }),
      ...(known_disks_at === undefined ? {} : { known_disks_at }),
    };
  }
  pxe(entry: BootCatalogEntry | null = ENTRY): string {
    const d = decideBootOffer(this.state, entry, this.tick());
    this.apply(d.change);
    this.events.push(d.event.kind);
    const retry = Object.keys(d.offer.details).find((k) => k.startsWith('retry_'));
    return retry === undefined ? d.offer.offerKind : `${d.offer.offerKind}+${retry}`;
  }
  /** The live env fetching its kernel, then its initrd, both tagged with ?mac=. */
  bootLiveEnv(): void {
    for (const artifact of ['bty-netboot.vmlinuz', 'bty-netboot.initrd']) {
      const r = armOnBootFetch(this.state, artifact, this.tick(), '10.0.0.9');
      this.apply(r.change);
      if (r.event) this.events.push(r.event.kind);
    }
  }
  status(status: 'done' | 'failed'): void {
    const r = applyFlashStatus(MAC, this.state, { status }, this.tick(), '10.0.0.9');
    this.apply(r.change);
    this.events.push(r.event.kind);
  }
  inventory(): void {
    // The inventory POST's only effect on the cycle: known_disks_at = now.
    this.apply({ known_disks_at: this.tick() });
  }
  operatorEdit(edit: Partial<BootMachine>): void {
    const after = { ...this.state, ...edit };
    const reset = policyResetChange(this.state, after);
    this.state = after;
    this.apply(reset);
  }
}

describe('the cycles §7.4 lists', () => {
  it('flash-always: flash → arm → done → disk boot + clear → flash → …', () => {
    const box = new Box(flash());
    const seen: string[] = [];
    for (let cycle = 0; cycle < 3; cycle++) {
      seen.push(box.pxe());
      box.bootLiveEnv();
      expect(box.state.saw_flasher_boot).toBe(true);
      box.status('done');
      seen.push(box.pxe());
      expect(box.state.saw_flasher_boot).toBe(false);
    }
    expect(seen).toEqual([
      'bty-flash-always',
      'bty-flash-always-ipxe-exit',
      'bty-flash-always',
      'bty-flash-always-ipxe-exit',
      'bty-flash-always',
      'bty-flash-always-ipxe-exit',
    ]);
    // One offered event per PXE contact; one armed event per live-env boot (not per artifact).
    expect(box.events.filter((k) => k === 'netboot.pxe.offered')).toHaveLength(6);
    expect(box.events.filter((k) => k === 'netboot.flasher.armed')).toHaveLength(3);
  });

  it('flash-once: flash → arm → done → disk boot forever (bit kept)', () => {
    const box = new Box(flash({ boot_mode: 'bty-flash-once' }));
    expect(box.pxe()).toBe('bty-flash-once');
    box.bootLiveEnv();
    box.status('done');
    for (let i = 0; i < 4; i++) {
      expect(box.pxe()).toBe('bty-flash-once-ipxe-exit');
      expect(box.state.saw_flasher_boot).toBe(true);
    }
    // A stray second live-env boot does not re-arm or re-log.
    const before = box.events.length;
    box.bootLiveEnv();
    expect(box.events).toHaveLength(before);
    expect(box.pxe()).toBe('bty-flash-once-ipxe-exit');
  });

  it('flash-once re-arms only when the operator changes a policy field', () => {
    const box = new Box(flash({ boot_mode: 'bty-flash-once' }));
    box.pxe();
    box.bootLiveEnv();
    box.status('done');
    expect(box.pxe()).toBe('bty-flash-once-ipxe-exit');
    box.operatorEdit({ sanboot_drive: '0x81' }); // not a policy field
    expect(box.pxe()).toBe('bty-flash-once-ipxe-exit');
    box.operatorEdit({ target_disk_serial: 'OTHER-SERIAL' });
    expect(box.state).toMatchObject({ saw_flasher_boot: false, last_flashed_at: null });
    expect(box.pxe()).toBe('bty-flash-once');
  });

  it('crashed flasher (armed, no done): the flash chain is re-served, never the disk', () => {
    const box = new Box(flash({ boot_mode: 'bty-flash-once' }));
    expect(box.pxe()).toBe('bty-flash-once');
    box.bootLiveEnv(); // ... and the box dies mid-write
    expect(box.pxe()).toBe('bty-flash-once+retry_after_armed_no_done');
    expect(box.pxe()).toBe('bty-flash-once+retry_after_armed_no_done');
    box.bootLiveEnv();
    box.status('done');
    expect(box.pxe()).toBe('bty-flash-once-ipxe-exit');
  });

  it('crashed flasher on a later flash-always cycle is retried, not disk-booted', () => {
    const box = new Box(flash());
    box.pxe();
    box.bootLiveEnv();
    box.status('done');
    expect(box.pxe()).toBe('bty-flash-always-ipxe-exit');
    expect(box.pxe()).toBe('bty-flash-always');
    box.bootLiveEnv(); // cycle 2 dies mid-write; last_flashed_at is cycle 1's
    expect(box.pxe()).toBe('bty-flash-always+retry_after_armed_no_done');
  });

  it('status=failed touches nothing but last-seen: the flash is retried', () => {
    const box = new Box(flash());
    box.pxe();
    box.bootLiveEnv();
    box.status('failed');
    expect(box.state).toMatchObject({ saw_flasher_boot: true, last_flashed_at: null });
    expect(box.pxe()).toBe('bty-flash-always+retry_after_armed_no_done');
    expect(box.events).toContain('machine.flash_failed');
  });

  it('inventory alternates: live env → arm → POST → disk boot + clear → live env → …', () => {
    const box = new Box(machine({ boot_mode: 'bty-inventory' }));
    const seen: string[] = [];
    for (let cycle = 0; cycle < 2; cycle++) {
      seen.push(box.pxe());
      box.bootLiveEnv();
      box.inventory();
      seen.push(box.pxe());
    }
    expect(seen).toEqual([
      'bty-inventory',
      'bty-inventory-ipxe-exit',
      'bty-inventory',
      'bty-inventory-ipxe-exit',
    ]);
    expect(box.state.saw_flasher_boot).toBe(false);
  });

  it('crashed inventory (armed, no POST): the inventory chain is re-served', () => {
    const box = new Box(machine({ boot_mode: 'bty-inventory' }));
    box.pxe();
    box.bootLiveEnv();
    box.inventory();
    box.pxe(); // disk boot, clears the bit
    expect(box.pxe()).toBe('bty-inventory');
    box.bootLiveEnv(); // ... and dies before posting
    expect(box.pxe()).toBe('bty-inventory+retry_after_armed_no_post');
  });

  it('unknown MAC first contact: discovered as bty-inventory, offered the inventory chain', () => {
    const { machine: row, event } = discoveredMachine(MAC, '10.0.0.9', 'pxe');
    expect(event.kind).toBe('machine.discovered');
    expect(new Box(row).pxe()).toBe('bty-inventory');
  });

  it('gates stay put while unresolved: no serial / orphan exit every time, nothing changes', () => {
    for (const [state, entry] of [
      [flash({ target_disk_serial: null }), ENTRY],
      [flash(), null],
    ] as const) {
      const box = new Box(state);
      expect([box.pxe(entry), box.pxe(entry)]).toEqual(['exit-fallback', 'exit-fallback']);
      expect(box.state).toEqual(state);
    }
  });

  it("without armed_at (upstream's record) the completion test is presence-only", () => {
    const legacy = flash({ saw_flasher_boot: true, last_flashed_at: at(5) });
    delete legacy.armed_at;
    expect(decideBootOffer(legacy, ENTRY, NOW).row).toBe(7);
  });
});

// ---------------------------------------------------------------------------------------------
// The helpers, one by one
// ---------------------------------------------------------------------------------------------

describe('cycleProgress and crashRetryFlag', () => {
  it.each([
    ['flash, not armed', flash(), 'unarmed', null],
    [
      'flash, armed, no done',
      flash({ saw_flasher_boot: true }),
      'incomplete',
      'retry_after_armed_no_done',
    ],
    [
      'flash, armed, done after arming',
      flash({ saw_flasher_boot: true, armed_at: at(1), last_flashed_at: at(2) }),
      'completed',
      null,
    ],
    [
      'flash, armed, done before arming',
      flash({ saw_flasher_boot: true, armed_at: at(2), last_flashed_at: at(1) }),
      'incomplete',
      'retry_after_armed_no_done',
    ],
    [
      'flash, armed, inventory only (wrong signal)',
      flash({ saw_flasher_boot: true, known_disks_at: at(2) }),
      'incomplete',
      'retry_after_armed_no_done',
    ],
    [
      'inventory, armed, no POST',
      machine({ boot_mode: 'bty-inventory', saw_flasher_boot: true }),
      'incomplete',
      'retry_after_armed_no_post',
    ],
    [
      'inventory, armed, flashed only (wrong signal)',
      machine({ boot_mode: 'bty-inventory', saw_flasher_boot: true, last_flashed_at: at(2) }),
      'incomplete',
      'retry_after_armed_no_post',
    ],
    [
      'inventory, armed, posted',
      machine({ boot_mode: 'bty-inventory', saw_flasher_boot: true, known_disks_at: at(2) }),
      'completed',
      null,
    ],
    ['ipxe-exit has no cycle', machine({ saw_flasher_boot: true }), null, null],
    ['bty-tui has no cycle', machine({ boot_mode: 'bty-tui', saw_flasher_boot: true }), null, null],
    ['ramboot has no cycle', machine({ boot_mode: 'ramboot', saw_flasher_boot: true }), null, null],
  ])('%s', (_name, m, progress, flag) => {
    expect(cycleProgress(m)).toBe(progress);
    expect(crashRetryFlag(m)).toBe(flag);
  });
});

describe('armOnBootFetch (/boot/<artifact>?mac=)', () => {
  const seen = { last_seen_at: NOW, last_seen_ip: '10.0.0.9' };

  it.each(['bty-flash-always', 'bty-flash-once', 'bty-inventory'])(
    '%s: 0→1 arms, stamps armed_at, logs netboot.flasher.armed without a source IP',
    (mode) => {
      const r = armOnBootFetch(machine({ boot_mode: mode }), 'x.vmlinuz', NOW, '10.0.0.9');
      expect(r.change).toEqual({ ...seen, saw_flasher_boot: true, armed_at: NOW, updated_at: NOW });
      expect(r.event).toEqual({
        kind: 'netboot.flasher.armed',
        subject_kind: 'machine',
        subject_id: MAC,
        actor: 'pxe-client',
        source_ip: null,
        summary: expect.stringContaining('x.vmlinuz') as unknown,
        details: { boot_mode: mode, artifact: 'x.vmlinuz' },
      });
    },
  );

  it.each([
    [
      'already armed (the initrd after the kernel)',
      machine({ boot_mode: 'bty-flash-once', saw_flasher_boot: true }),
    ],
    ['ipxe-exit', machine()],
    ['bty-tui', machine({ boot_mode: 'bty-tui' })],
    ['ramboot', machine({ boot_mode: 'ramboot' })],
    ['an unknown mode', machine({ boot_mode: 'nope' })],
  ])('%s: only last-seen is refreshed (not updated_at), nothing is logged', (_name, m) => {
    const r = armOnBootFetch(m, 'x.initrd', NOW, '10.0.0.9');
    expect(r).toEqual({ change: seen, event: null });
  });

  it('any artifact name arms: the name is only recorded', () => {
    const r = armOnBootFetch(flash(), 'anything.bin', NOW, null);
    expect(r.change).toMatchObject({ saw_flasher_boot: true, last_seen_ip: null });
  });

  it('no row for the MAC: nothing happens (arming never creates machines)', () => {
    expect(armOnBootFetch(null, 'x.vmlinuz', NOW, '10.0.0.9')).toEqual({
      change: null,
      event: null,
    });
  });
});

describe('applyFlashStatus (POST /pxe/{mac}/status)', () => {
  const base = {
    subject_kind: 'machine',
    subject_id: MAC,
    actor: 'pxe-client',
    source_ip: '10.0.0.9',
  };

  it('done stamps last_flashed_at and last-seen; never the mode or the bit', () => {
    const r = applyFlashStatus(
      MAC,
      flash({ saw_flasher_boot: true }),
      { status: 'done' },
      NOW,
      '10.0.0.9',
    );
    expect(r).toEqual({
      outcome: 'recorded',
      change: {
        last_flashed_at: NOW,
        last_seen_at: NOW,
        last_seen_ip: '10.0.0.9',
        updated_at: NOW,
      },
      event: {
        ...base,
        kind: 'machine.flashed',
        summary: `${MAC} reported a completed flash`,
        details: null,
      },
    });
  });

  it.each([
    [
      { status: 'failed' as const, reason: '  digest mismatch \n' },
      `: digest mismatch`,
      { reason: 'digest mismatch' },
    ],
    [{ status: 'failed' as const, reason: '   ' }, '', null],
    [{ status: 'failed' as const }, '', null],
  ])(
    'failed %j refreshes last-seen only and logs the trimmed reason',
    (report, suffix, details) => {
      const r = applyFlashStatus(MAC, flash({ saw_flasher_boot: true }), report, NOW, '10.0.0.9');
      expect(r).toEqual({
        outcome: 'recorded',
        change: { last_seen_at: NOW, last_seen_ip: '10.0.0.9', updated_at: NOW },
        event: {
          ...base,
          kind: 'machine.flash_failed',
          summary: `${MAC} reported a failed flash${suffix}`,
          details,
        },
      });
    },
  );

  it.each(['done', 'failed'] as const)('%s from an unknown MAC is an orphan signal', (status) => {
    const r = applyFlashStatus(MAC, null, { status }, NOW, '10.0.0.9');
    expect(r).toEqual({
      outcome: 'orphan',
      change: null,
      event: {
        ...base,
        kind: 'pxe.client.orphan',
        summary: expect.stringContaining(MAC) as unknown,
        details: { signal: status },
      },
    });
  });
});

describe('policyChanged / policyResetChange (operator upsert)', () => {
  const policy = { boot_mode: 'bty-flash-always', bty_image_ref: REF, target_disk_serial: SERIAL };
  const RESET = { saw_flasher_boot: false, last_flashed_at: null, known_disks_at: null };

  it.each([
    ['same values', policy, false],
    ['mode', { ...policy, boot_mode: 'bty-flash-once' }, true],
    ['ref', { ...policy, bty_image_ref: OTHER_REF }, true],
    ['ref removed', { ...policy, bty_image_ref: null }, true],
    ['serial', { ...policy, target_disk_serial: 'OTHER' }, true],
    ['serial removed', { ...policy, target_disk_serial: '' }, true],
  ])('%s → changed=%s', (_name, after, changed) => {
    expect(policyChanged(policy, after)).toBe(changed);
    expect(policyResetChange(policy, after)).toEqual(changed ? RESET : null);
  });

  it.each([
    ['ref', { bty_image_ref: null }, { bty_image_ref: '' }],
    ['serial', { target_disk_serial: '' }, { target_disk_serial: null }],
  ])('NULL ≡ "" for the %s', (_name, before, after) => {
    const b = { ...policy, ...before };
    const a = { ...policy, ...after };
    expect(policyChanged(b, a)).toBe(false);
    expect(policyResetChange(b, a)).toBeNull();
  });

  it('labels or sanboot_drive alone keep the bit and the signals', () => {
    const before = flash({ saw_flasher_boot: true, last_flashed_at: at(1), known_disks_at: at(1) });
    const after: BootMachine = { ...before, sanboot_drive: '0x81' };
    expect(policyResetChange(before, after)).toBeNull();
  });

  it('a create (no previous row) starts from a clean cycle', () => {
    expect(policyResetChange(null, policy)).toEqual(RESET);
  });
});

describe('discoveredMachine (first contact)', () => {
  it.each([
    ['pxe', '10.0.0.9', `${MAC} first contacted /pxe from 10.0.0.9`],
    ['plan', null, `${MAC} first contacted /pxe/${MAC}/plan from unknown IP`],
  ] as const)('via %s', (via, ip, summary) => {
    const { machine: row, event } = discoveredMachine(MAC, ip, via);
    expect(row).toEqual(machine({ boot_mode: 'bty-inventory' }));
    expect(event).toEqual({
      kind: 'machine.discovered',
      subject_kind: 'machine',
      subject_id: MAC,
      actor: 'pxe-client',
      source_ip: ip,
      summary,
      details: {
        bty_image_ref: null,
        boot_mode: 'bty-inventory',
        sanboot_drive: null,
        labels: [],
        target_disk_serial: null,
      },
    });
  });
});

describe('decidePlanDispatch (GET /pxe/{mac}/plan)', () => {
  it.each([
    [
      'flash mode, everything resolved',
      flash({ boot_mode: 'bty-flash-once' }),
      ENTRY,
      {
        mode: 'flash',
        offerKind: 'plan:flash:bty-flash-once',
        bootMode: 'bty-flash-once',
        bty_image_ref: REF,
        target_disk_serial: SERIAL,
        entry: ENTRY,
      },
    ],
    [
      'flash mode after the cycle completed (the plan ignores the bit)',
      flash({ saw_flasher_boot: true, last_flashed_at: at(1) }),
      ENTRY,
      expect.objectContaining({
        mode: 'flash',
        offerKind: 'plan:flash:bty-flash-always',
      }) as unknown,
    ],
    [
      'flash mode, no serial',
      flash({ target_disk_serial: null }),
      ENTRY,
      {
        mode: 'interactive',
        offerKind: 'plan:interactive:flash-unresolved',
        reason: 'no_target_disk',
      },
    ],
    [
      'flash mode, orphan ref',
      flash(),
      null,
      { mode: 'interactive', offerKind: 'plan:interactive:flash-unresolved', reason: 'orphan_ref' },
    ],
    [
      'flash mode, entry for another ref',
      flash(),
      { name: 'x', ref: OTHER_REF },
      { mode: 'interactive', offerKind: 'plan:interactive:flash-unresolved', reason: 'orphan_ref' },
    ],
    [
      'bty-tui',
      machine({ boot_mode: 'bty-tui' }),
      null,
      { mode: 'interactive', offerKind: 'plan:interactive:tui' },
    ],
    [
      'bty-inventory',
      machine({ boot_mode: 'bty-inventory' }),
      null,
      { mode: 'inventory', offerKind: 'plan:inventory' },
    ],
    ['ipxe-exit', machine(), ENTRY, { mode: 'exit', offerKind: 'plan:exit:ipxe-exit' }],
    [
      'ramboot',
      machine({ boot_mode: 'ramboot', bty_image_ref: REF }),
      ENTRY,
      { mode: 'exit', offerKind: 'plan:exit:ramboot' },
    ],
    [
      'flash mode without a ref',
      flash({ bty_image_ref: null }),
      null,
      { mode: 'exit', offerKind: 'plan:exit:bty-flash-always' },
    ],
    [
      'unknown mode',
      machine({ boot_mode: 'nope' }),
      null,
      { mode: 'exit', offerKind: 'plan:exit:nope' },
    ],
  ])('%s', (_name, m, entry, plan) => {
    expect(decidePlanDispatch(m, entry)).toEqual(plan);
  });
});
