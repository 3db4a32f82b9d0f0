/** @jsxImportSource react */
import { render } from 'ink-testing-library';
import { afterEach, describe, expect, it } from 'vitest';
import type { PickerRow } from '../../src/catalog/merge.ts';
import type { FlashProgress } from '../../src/core/progress.ts';
import type { Disk } from '../../src/flash/disks.ts';
import {
  ASCII_GLYPHS,
  UNICODE_GLYPHS,
  WizardApp,
  WizardScreen,
  wantsAscii,
  type Glyphs,
} from '../../src/tui/app.tsx';
import { WizardController } from '../../src/tui/controller.ts';
import type { FlashChoice, WizardServices } from '../../src/tui/services.ts';
import {
  initialState,
  start,
  type FlashOutcome,
  type WizardStart,
  type WizardState,
} from '../../src/tui/state.ts';
import { disk, imageRow, plan, systemDisk } from './fixtures.ts';

const KEYS = { enter: '\r', esc: '\x1b', down: '\x1b[B', ctrlC: '\x03', backspace: '\x7f' };

interface FakeOptions {
  rows?: PickerRow[];
  catalogError?: string | null;
  disks?: Disk[];
  /** Resolves the flash; the test decides when. */
  flashOutcome?: FlashOutcome;
}

function fakeServices(options: FakeOptions = {}) {
  const calls = { catalogs: [] as Array<string | null>, flashed: [] as FlashChoice[], reboots: 0 };
  let progress: ((p: FlashProgress) => void) | null = null;
  let finish: ((o: FlashOutcome) => void) | null = null;
  let cancelled = false;
  const services: WizardServices = {
    loadImages: (catalog) => {
      calls.catalogs.push(catalog);
      return Promise.resolve({
        rows: options.rows ?? [imageRow('debian-13-amd64.img.zst')],
        error: options.catalogError ?? null,
      });
    },
    loadDisks: () => Promise.resolve(options.disks ?? [disk('sda'), systemDisk('nvme0n1')]),
    plan: ({ image, disk: target }) => Promise.resolve(plan(image, target)),
    flash: (choice, onProgress, signal) => {
      calls.flashed.push(choice);
      progress = onProgress;
      signal.addEventListener('abort', () => {
        cancelled = true;
        finish?.({
          ok: false,
          cancelled: true,
          message: 'flash cancelled by operator',
          hint: 'Flash again.',
        });
      });
      return new Promise((resolve) => (finish = resolve));
    },
    reboot: () => {
      calls.reboots++;
      return Promise.resolve();
    },
  };
  return {
    services,
    calls,
    progress: (p: FlashProgress) => progress?.(p),
    finish: (o: FlashOutcome) => finish?.(o),
    cancelled: () => cancelled,
  };
}

let unmount: (() => void) | null = null;
afterEach(() => {
  unmount?.();
  unmount = null;
});

function mount(
  fake: ReturnType<typeof fakeServices>,
  begin: WizardStart = { catalog: null, localImagesExist: false },
  glyphs: Glyphs = UNICODE_GLYPHS,
) {
  let quits = 0;
  const controller = new WizardController(fake.services, start(begin), () => quits++);
  const app = render(
    <WizardApp
      controller={controller}
      header={{ version: '9.9.9', imageRoot: '/img' }}
      glyphs={glyphs}
    />,
  );
  unmount = app.unmount;
  const frame = () => app.lastFrame() ?? '';
  /** Waits (bounded) until the screen shows `text`. */
  const until = async (text: string | RegExp) => {
    for (let i = 0; i < 100; i++) {
      const f = frame();
      if (typeof text === 'string' ? f.includes(text) : text.test(f)) return f;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`screen never showed ${String(text)}; last frame:\n${frame()}`);
  };
  /** Types keys one at a time, letting Ink read each (Esc needs its own read to be a lone Esc). */
  const type = async (...keys: string[]) => {
    for (const key of keys) {
      app.stdin.write(key);
      await new Promise((r) => setTimeout(r, 30));
    }
  };
  return { frame, until, type, controller, quits: () => quits };
}

describe('wizard screens', () => {
  it('walks source -> image -> disk -> confirm -> flash -> result, and reboots on b', async () => {
    const fake = fakeServices();
    const w = mount(fake);
    await w.until('How should bty find images?');
    expect(w.frame()).toContain('[1.Source]');
    await w.type('l');
    await w.until('debian-13-amd64.img.zst');
    expect(w.frame()).toContain('[2.Image]');
    expect(w.frame()).toMatch(/img\.zst\s+x86_64\s+50\.0 MiB\s+local/);
    await w.type(KEYS.enter);
    await w.until('[3.Disk]');
    await w.until('/dev/sda');
    await w.type(KEYS.enter);
    await w.until('Flash plan');
    const confirm = w.frame();
    for (const part of [
      '[4.Confirm]',
      '/images/debian-13-amd64.img.zst',
      'Samsung SSD 870',
      'SSDA123',
      'read-back',
      'sha256',
    ]) {
      expect(confirm).toContain(part);
    }
    await w.type('y');
    await w.until('[5.Flash]');
    fake.progress({
      phase: 'write',
      bytes_done: 512 << 20,
      bytes_total: 1024 << 20,
      rate_bps: 100 << 20,
      eta_seconds: 65,
      resumes: 2,
    });
    await w.until('50%');
    expect(w.frame()).toMatch(/writing/);
    expect(w.frame()).toContain('512 MiB / 1.0 GiB');
    expect(w.frame()).toContain('100 MiB/s');
    expect(w.frame()).toContain('ETA 1:05');
    expect(w.frame()).toContain('resumes: 2');
    fake.finish({
      ok: true,
      target: '/dev/sda',
      imageBytes: 1024 << 20,
      bytesWritten: 900 << 20,
      seconds: 3.2,
      sha256: 'ab'.repeat(32),
      sha256Verified: true,
      readBackVerified: false,
      resumes: 2,
    });
    await w.until('Flash completed');
    expect(w.frame()).toContain('[6.Result]');
    expect(w.frame()).toContain('verified while writing');
    await w.type('b');
    await w.until('Rebooting now');
    expect(fake.calls.reboots).toBe(1);
    expect(w.quits()).toBe(1);
  });

  it('Esc goes back one step from every screen', async () => {
    const fake = fakeServices();
    const w = mount(fake);
    await w.type('l');
    await w.until('debian-13');
    await w.type(KEYS.enter);
    await w.until('/dev/sda');
    await w.type(KEYS.enter);
    await w.until('Flash plan');
    await w.type(KEYS.esc);
    await w.until('[3.Disk]');
    await w.type(KEYS.esc);
    await w.until('[2.Image]');
    await w.type(KEYS.esc);
    await w.until('How should bty find images?');
    await w.type(KEYS.esc);
    expect(w.frame()).toContain('[1.Source]');
  });

  it('keeps a typed mixed-case URL as typed', async () => {
    const fake = fakeServices();
    const w = mount(fake);
    await w.type('c');
    await w.until('Custom catalog source');
    const url = 'oras://GHCR.io/Owner/Repo:Tag-1';
    await w.type(...url.split(''), 'X', KEYS.backspace);
    await w.until(`source> ${url}_`);
    await w.type(KEYS.enter);
    await w.until(`catalog: ${url}`);
    expect(fake.calls.catalogs).toEqual([url]);
  });

  it('shows a catalog load failure as a banner, with the local images still listed', async () => {
    const fake = fakeServices({ catalogError: 'catalog load failed: HTTP 404 Not Found' });
    const w = mount(fake, {
      catalog: 'http://h/catalog.toml',
      localImagesExist: false,
      banner: 'bty: the plan could not be fetched',
    });
    await w.until('catalog load failed: HTTP 404 Not Found');
    expect(w.frame()).toContain('bty: the plan could not be fetched');
    expect(w.frame()).toContain('debian-13-amd64.img.zst');
    expect(w.frame()).toContain('[2.Image]');
  });

  it('greys ineligible disks with their reason and refuses to pick them', async () => {
    const fake = fakeServices();
    const w = mount(fake, { catalog: null, localImagesExist: true });
    await w.until('debian-13');
    await w.type(KEYS.enter);
    await w.until('/dev/nvme0n1');
    expect(w.frame()).toContain('refused: /dev/nvme0n1 holds the running system (/)');
    await w.type('2', KEYS.enter);
    await w.until('/dev/nvme0n1 cannot be flashed');
    expect(w.frame()).toContain('[3.Disk]');
  });

  it('Ctrl-C during the flash asks before cancelling, then shows the failure and what to do', async () => {
    const fake = fakeServices();
    const w = mount(fake, { catalog: null, localImagesExist: true });
    await w.until('debian-13');
    await w.type(KEYS.enter);
    await w.until('/dev/sda');
    await w.type(KEYS.enter);
    await w.until('Flash plan');
    await w.type('y');
    await w.until('[5.Flash]');
    await w.type(KEYS.ctrlC);
    await w.until('Cancel the flash?');
    await w.type('n');
    await w.until(/^(?![\s\S]*Cancel the flash\?)/);
    expect(fake.cancelled()).toBe(false);
    await w.type(KEYS.ctrlC, 'y');
    await w.until('Flash cancelled.');
    expect(fake.cancelled()).toBe(true);
    expect(w.frame()).toContain('What to do: Flash again.');
  });

  it('falls back to ASCII on TERM=linux or without a UTF-8 locale', async () => {
    expect(wantsAscii({ TERM: 'linux', LANG: 'en_US.UTF-8' })).toBe(true);
    expect(wantsAscii({ TERM: 'xterm-256color', LANG: 'C' })).toBe(true);
    expect(wantsAscii({ TERM: 'xterm-256color', LANG: 'en_US.UTF-8' })).toBe(false);
    expect(wantsAscii({ TERM: 'xterm', LC_ALL: 'C.utf8' })).toBe(false);

    const fake = fakeServices();
    const w = mount(fake, { catalog: null, localImagesExist: true }, ASCII_GLYPHS);
    await w.until('debian-13');
    await w.type(KEYS.enter);
    await w.until('/dev/sda');
    await w.type(KEYS.enter);
    await w.until('Flash plan');
    await w.type('y');
    fake.progress({
      phase: 'write',
      bytes_done: 1,
      bytes_total: 4,
      rate_bps: 0,
      eta_seconds: null,
      resumes: 0,
    });
    await w.until('25%');
    const screen = w.frame();
    // Nothing outside printable ASCII (Ink adds no colour codes in tests).
    expect(screen).toMatch(/^[\x20-\x7e\n]*$/);
    expect(screen).toContain('+---');
    expect(screen).toContain('[#############.....................................]');
  });

  it('fits 80 columns and 25 lines on every screen', async () => {
    const rows = Array.from({ length: 30 }, (_, i) =>
      imageRow(`image-with-a-rather-long-name-${i}.img.zst`),
    );
    const disks = Array.from({ length: 12 }, (_, i) =>
      i % 2 ? systemDisk(`sd${i}`) : disk(`sd${i}`),
    );
    const fake = fakeServices({ rows, disks, catalogError: 'catalog load failed: x' });
    const w = mount(fake, { catalog: 'c.toml', localImagesExist: true });
    const fits = (frame: string) => {
      const lines = frame.split('\n');
      expect(lines.length).toBeLessThanOrEqual(25);
      for (const line of lines) expect(line.length).toBeLessThanOrEqual(80);
    };
    await w.until('image-with');
    fits(w.frame());
    await w.type(KEYS.enter);
    await w.until('/dev/sd0');
    fits(w.frame());
    await w.type(KEYS.enter);
    await w.until('Flash plan');
    fits(w.frame());
  });

  it('every screen stays within 80x25 with long texts: flash, result, banners, refusals, notes', () => {
    const long = (what: string) =>
      `${what}: ${'a rather long explanation that goes on and on '.repeat(6)}end`;
    const img = imageRow(`${'very-long-image-name-'.repeat(5)}.img.zst`);
    const refused = Array.from({ length: 40 }, (_, i) =>
      disk(`sd${String.fromCharCode(97 + (i % 26))}${i}`, {
        eligible: i % 5 === 0,
        reasons:
          i % 5 === 0
            ? []
            : [
                { code: 'BTY_ERR_TARGET_MOUNTED', message: long(`mounted ${i}`) },
                { code: 'BTY_ERR_TARGET_SYSTEM_DISK', message: long('system') },
              ],
      }),
    );
    const target = refused[0]!;
    const notes = Array.from({ length: 15 }, (_, i) => long(`note ${i}`));
    const longPlan = {
      ...plan(img, target, [
        { code: 'BTY_ERR_TARGET_TOO_SMALL' as const, message: long('too small') },
        { code: 'BTY_ERR_TARGET_MOUNTED' as const, message: long('mounted') },
      ]),
      notes,
    };
    const base: WizardState = {
      ...initialState({ catalog: `http://h/${'c'.repeat(200)}.toml`, localImagesExist: true }),
      banner: long('bty: the plan could not be fetched'),
      loadError: long('catalog load failed'),
      images: Array.from({ length: 40 }, (_, i) => imageRow(`${'n'.repeat(60)}-${i}`)),
    };
    const atDisk = { ...base, image: img, disks: refused };
    const atConfirm = { ...atDisk, disk: target };
    const atFlash = {
      ...atConfirm,
      plan: { ...longPlan, refusals: [] },
      flashing: true,
      askCancel: true,
      progress: {
        phase: 'download' as const,
        bytes_done: 1,
        bytes_total: null,
        source_bytes_done: 5 << 20,
        source_bytes_total: 1 << 30,
        rate_bps: 1 << 20,
        eta_seconds: 3600,
        resumes: 3,
        message: long('retrying after a connection reset'),
      },
    };
    const failure = {
      ok: false as const,
      cancelled: false,
      message: long('EIO writing /dev/sda'),
      hint: long('check the cable'),
    };
    const states: Array<[string, WizardState]> = [
      ['source', { ...base, chosen: false, typing: `http://${'x'.repeat(150)}` }],
      ['image', { ...base, cursor: 25, notice: long('notice') }],
      ...[0, 1, 17, 39].map((cursor): [string, WizardState] => [
        `disk @${cursor}`,
        { ...atDisk, cursor, notice: long('/dev/sdb cannot be flashed') },
      ]),
      ['confirm (refused, long notes)', { ...atConfirm, plan: longPlan }],
      ['confirm (allowed, long notes)', { ...atConfirm, plan: { ...longPlan, refusals: [] } }],
      ['confirm (plan error)', { ...atConfirm, planError: long('cannot read the image') }],
      ['flash', atFlash],
      ['flash (cancelling)', { ...atFlash, askCancel: false, cancelling: true }],
      [
        'result (ok)',
        {
          ...atConfirm,
          noReboot: true,
          outcome: {
            ok: true,
            target: target.path,
            imageBytes: 1 << 30,
            bytesWritten: 1 << 29,
            seconds: 12.5,
            sha256: null,
            sha256Verified: true,
            readBackVerified: true,
            resumes: 7,
          },
          notice: long('Press b'),
        },
      ],
      ['result (failed)', { ...atConfirm, outcome: failure, notice: long('Press Enter') }],
      ['result (disk changed)', { ...atConfirm, outcome: { ...failure, diskChanged: true } }],
    ];
    for (const glyphs of [UNICODE_GLYPHS, ASCII_GLYPHS]) {
      for (const [name, state] of states) {
        const app = render(
          <WizardScreen
            state={state}
            header={{ version: '9.9.9', imageRoot: '/img' }}
            glyphs={glyphs}
          />,
        );
        const frame = app.lastFrame() ?? '';
        app.unmount();
        const lines = frame.split('\n');
        expect(lines.length, `${name}:\n${frame}`).toBeLessThanOrEqual(25);
        for (const line of lines) expect(line.length, `${name}: ${line}`).toBeLessThanOrEqual(80);
        // The key guide (last line) is never pushed off.
        expect(lines.at(-1), name).toMatch(/\[(q|Ctrl-C|Enter|Esc)\]/);
        if (name.startsWith('disk')) {
          // The highlighted disk is on screen, whatever the scroll position.
          expect(frame, name).toMatch(new RegExp(`^>${(state.cursor + 1).toString()}\\s`, 'm'));
        }
      }
    }
  });

  it('--no-reboot: the result screen says the reboot key only leaves', async () => {
    const fake = fakeServices();
    const w = mount(fake, { catalog: null, localImagesExist: true, noReboot: true });
    await w.until('debian-13');
    await w.type(KEYS.enter);
    await w.until('/dev/sda');
    await w.type(KEYS.enter);
    await w.until('Press y to flash');
    await w.type('y');
    await w.until('[5.Flash]');
    fake.finish({
      ok: true,
      target: '/dev/sda',
      imageBytes: 1,
      bytesWritten: 1,
      seconds: 1,
      sha256: null,
      sha256Verified: false,
      readBackVerified: false,
      resumes: 0,
    });
    await w.until('Flash completed');
    expect(w.frame()).toContain('[b] leave (reboot skipped: --no-reboot)');
    await w.type('b');
    await w.until('Reboot skipped (--no-reboot)');
    expect(fake.calls.reboots).toBe(1);
    expect(w.quits()).toBe(1);
  });

  it('a disk changed under the confirm screen: the result says nothing was written', async () => {
    const fake = fakeServices();
    const w = mount(fake, { catalog: null, localImagesExist: true });
    await w.until('debian-13');
    await w.type(KEYS.enter);
    await w.until('/dev/sda');
    await w.type(KEYS.enter);
    await w.until('Press y to flash');
    await w.type('y');
    await w.until('[5.Flash]');
    fake.finish({
      ok: false,
      cancelled: false,
      diskChanged: true,
      message: '/dev/sda is no longer the disk you confirmed (serial A -> B); nothing was written',
      hint: 'Check which disk is attached, then pick it again from the refreshed list.',
    });
    await w.until('The disk changed: nothing was written.');
    expect(w.frame()).toContain('[Enter] pick the disk again');
    await w.type(KEYS.enter);
    await w.until('[3.Disk]');
  });
});
