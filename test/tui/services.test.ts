/**
 * The wizard's services and controller without a terminal: the write-time identity check handed
 * to the engine's `confirm` hook, `--no-reboot`, and the outcome report (`onOutcome`).
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BtyError } from '../../src/core/errors.ts';
import type { flash } from '../../src/flash/engine.ts';
import type { FlashPlan } from '../../src/flash/plan.ts';
import {
  CANCELLED_REASON,
  WizardController,
  type WizardOutcome,
} from '../../src/tui/controller.ts';
import {
  identityChanges,
  realServices,
  type FlashChoice,
  type WizardServices,
} from '../../src/tui/services.ts';
import { initialState, type FlashOutcome, type WizardDisk } from '../../src/tui/state.ts';
import { disk, imageRow, plan } from './fixtures.ts';

const img = imageRow('debian-13.img.zst');
const identity = { serial: 'SSDA123', wwn: '0x5002538e', size_bytes: 64 * 1024 ** 3 };
const sda: WizardDisk = { ...disk('sda'), identity: { ...identity, backing_file: null } };

/**
 * A stand-in for the engine: asks `confirm` with a plan whose target is `seen`, then "writes"
 * (records it) only when confirmed, throwing the engine's own error otherwise.
 */
function fakeEngine(seen: Partial<FlashPlan['target']>) {
  const written: string[] = [];
  const engine = (async (request) => {
    const validated = plan(img, sda);
    const shown = { ...validated, target: { ...validated.target, wwn: identity.wwn, ...seen } };
    if (request.confirm && !(await request.confirm(shown))) {
      throw new BtyError(
        'BTY_ERR_NOT_CONFIRMED',
        'flash declined at the confirmation prompt; nothing was written',
      );
    }
    written.push(request.target);
    return {
      ok: true,
      dry_run: false,
      plan: shown,
      image_bytes: 10,
      bytes_written: 10,
      bytes_skipped: 0,
      source_bytes: 10,
      sha256: null,
      sha256_verified: false,
      verified: false,
      resumes: 0,
      seconds: 1,
      notes: [],
    };
  }) as typeof flash;
  return { engine, written };
}

function flashWith(services: WizardServices, target: WizardDisk = sda): Promise<FlashOutcome> {
  return services.flash(
    { image: img, disk: target, readBack: false },
    () => {},
    new AbortController().signal,
  );
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-tui-services-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('write-time identity (the confirm hook)', () => {
  it('names what changed, and nothing when the disk is the same', () => {
    const confirmed = { ...identity, backing_file: null };
    expect(identityChanges(confirmed, confirmed)).toEqual([]);
    expect(
      identityChanges(confirmed, { ...confirmed, serial: 'OTHER', size_bytes: 8 * 1024 ** 3 }),
    ).toEqual([`serial SSDA123 -> OTHER`, `size ${64 * 1024 ** 3} -> ${8 * 1024 ** 3}`]);
    expect(identityChanges(confirmed, { ...confirmed, wwn: null })).toEqual([
      'WWN 0x5002538e -> none',
    ]);
  });

  it('writes when the target still is the confirmed disk', async () => {
    const { engine, written } = fakeEngine({ serial: 'SSDA123' });
    const outcome = await flashWith(realServices({}, { flash: engine }));
    expect(outcome.ok).toBe(true);
    expect(written).toEqual(['/dev/sda']);
  });

  it('refuses a stick swapped under the confirm screen: nothing written, the result says so', async () => {
    for (const seen of [
      { serial: 'OTHER-STICK' },
      { wwn: '0xdeadbeef' },
      { size_bytes: 8 * 1024 ** 3 },
    ]) {
      const { engine, written } = fakeEngine({ serial: 'SSDA123', ...seen });
      const outcome = await flashWith(realServices({}, { flash: engine }));
      expect(written).toEqual([]);
      expect(outcome).toMatchObject({ ok: false, cancelled: false, diskChanged: true });
      if (outcome.ok) throw new Error('unreachable');
      expect(outcome.message).toMatch(
        /^\/dev\/sda is no longer the disk you confirmed \(.+\); nothing was written$/,
      );
    }
  });

  it('a loop device is the same only while the same file backs it', async () => {
    const sysBlock = join(dir, 'sys-block');
    await mkdir(join(sysBlock, 'loop7', 'loop'), { recursive: true });
    const backing = join(sysBlock, 'loop7', 'loop', 'backing_file');
    const loop: WizardDisk = {
      ...disk('loop7', { type: 'loop', serial: 'loop-a.img', wwn: null }),
      identity: { serial: null, wwn: null, size_bytes: 64 * 1024 ** 3, backing_file: '/t/a.img' },
    };
    const seen = { serial: null, wwn: null, path: '/dev/loop7' };

    await writeFile(backing, '/t/a.img\n');
    const same = fakeEngine(seen);
    expect((await flashWith(realServices({}, { flash: same.engine, sysBlock }), loop)).ok).toBe(
      true,
    );

    // Unlinked while attached is still the same file.
    await writeFile(backing, '/t/a.img (deleted)\n');
    const unlinked = fakeEngine(seen);
    const kept = await flashWith(realServices({}, { flash: unlinked.engine, sysBlock }), loop);
    expect(kept.ok).toBe(true);

    await writeFile(backing, '/t/b.img\n');
    const swapped = fakeEngine(seen);
    const outcome = await flashWith(realServices({}, { flash: swapped.engine, sysBlock }), loop);
    expect(swapped.written).toEqual([]);
    expect(outcome).toMatchObject({ ok: false, diskChanged: true });
    if (!outcome.ok) expect(outcome.message).toContain('backing file /t/a.img -> /t/b.img)');
  });
});

describe('--no-reboot', () => {
  it('the reboot service only says it is skipped', async () => {
    const lines: string[] = [];
    await realServices({}, { noReboot: true }).reboot((line) => lines.push(line));
    expect(lines).toEqual(['bty: reboot skipped (--no-reboot)']);
  });
});

/** Services whose flash ends when the test says so. */
function controllable() {
  let finish: (o: FlashOutcome) => void = () => {};
  let aborted = false;
  const services: WizardServices = {
    loadImages: () => Promise.resolve({ rows: [img], error: null }),
    loadDisks: () => Promise.resolve([sda]),
    plan: ({ image, disk: target }: FlashChoice) => Promise.resolve(plan(image, target)),
    flash: (_choice, _progress, signal) =>
      new Promise((resolve) => {
        finish = resolve;
        signal.addEventListener('abort', () => {
          aborted = true;
          resolve({ ok: false, cancelled: true, message: 'flash cancelled', hint: 'again' });
        });
      }),
    reboot: () => Promise.resolve(),
  };
  return { services, finish: (o: FlashOutcome) => finish(o), aborted: () => aborted };
}

const ok: FlashOutcome = {
  ok: true,
  target: '/dev/sda',
  imageBytes: 1,
  bytesWritten: 1,
  seconds: 1,
  sha256: null,
  sha256Verified: false,
  readBackVerified: false,
  resumes: 0,
};

/** A controller already on the confirm screen with a good plan, `y` pressed. */
function flashing(
  services: WizardServices,
  onOutcome?: (o: WizardOutcome) => Promise<void>,
  outcomeTimeoutMs?: number,
) {
  const atConfirm = {
    ...initialState({ catalog: null, localImagesExist: true }),
    images: [img],
    image: img,
    disks: [sda],
    disk: sda,
    plan: plan(img, sda),
  };
  const controller = new WizardController(services, [atConfirm, []], () => {}, {
    onOutcome,
    outcomeTimeoutMs,
  });
  controller.dispatch({ type: 'key', key: { name: 'char', char: 'y' } });
  expect(controller.flashing).toBe(true);
  return controller;
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('onOutcome', () => {
  it('reports success, failure and cancel, before the result screen shows', async () => {
    const cases: Array<[FlashOutcome | 'cancel', WizardOutcome]> = [
      [ok, { ok: true }],
      [
        { ok: false, cancelled: false, message: 'EIO writing /dev/sda', hint: 'h' },
        { ok: false, reason: 'EIO writing /dev/sda' },
      ],
      ['cancel', { ok: false, reason: CANCELLED_REASON }],
    ];
    for (const [end, expected] of cases) {
      const fake = controllable();
      const reported: WizardOutcome[] = [];
      let release: () => void = () => {};
      const controller = flashing(fake.services, (o) => {
        reported.push(o);
        return new Promise<void>((r) => (release = r));
      });
      if (end === 'cancel') {
        controller.dispatch({ type: 'key', key: { name: 'ctrl-c' } });
        controller.dispatch({ type: 'key', key: { name: 'char', char: 'y' } });
      } else fake.finish(end);
      await tick();
      expect(reported).toEqual([expected]);
      // Still on the flash screen until the report is done.
      expect(controller.getState().outcome).toBeNull();
      release();
      await controller.settled();
      expect(controller.getState().outcome).not.toBeNull();
    }
  });

  it('a slow or failing report holds the result screen back only until the timeout', async () => {
    const fake = controllable();
    const controller = flashing(fake.services, () => new Promise<void>(() => {}), 50);
    fake.finish(ok);
    await tick();
    expect(controller.getState().outcome).toBeNull();
    await controller.settled();
    expect(controller.getState().outcome?.ok).toBe(true);

    const failing = controllable();
    const other = flashing(failing.services, () => Promise.reject(new Error('server down')));
    failing.finish(ok);
    await other.settled();
    expect(other.getState().outcome?.ok).toBe(true);
  });

  it('SIGTERM (abortFlash) stops the engine without asking; settled() waits for it', async () => {
    const fake = controllable();
    const reported: WizardOutcome[] = [];
    const controller = flashing(fake.services, (o) => {
      reported.push(o);
      return Promise.resolve();
    });
    controller.abortFlash();
    expect(controller.getState().askCancel).toBe(false);
    expect(fake.aborted()).toBe(true);
    await controller.settled();
    expect(controller.flashing).toBe(false);
    expect(controller.getState().outcome).toMatchObject({ ok: false, cancelled: true });
    expect(reported).toEqual([{ ok: false, reason: CANCELLED_REASON }]);
  });
});
