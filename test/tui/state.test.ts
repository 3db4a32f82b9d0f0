import { describe, expect, it } from 'vitest';
import {
  back,
  DEFAULT_CATALOG_URL,
  initialState,
  stageOf,
  start,
  step,
  type Effect,
  type Stage,
  type WizardKey,
  type WizardState,
} from '../../src/tui/state.ts';
import { disk, imageRow, plan, systemDisk } from './fixtures.ts';

const img = imageRow('debian-13.img.zst');
const sda = disk('sda');
const sdb = systemDisk('sdb');

const enter: WizardKey = { name: 'enter' };
const esc: WizardKey = { name: 'escape' };
const down: WizardKey = { name: 'down' };
const ctrlC: WizardKey = { name: 'ctrl-c' };
const ch = (char: string): WizardKey => ({ name: 'char', char });

/** States at each stage, built from the start the way an operator gets there. */
const fresh = initialState({ catalog: null, localImagesExist: false });
const atImage: WizardState = { ...fresh, chosen: true, images: [img] };
const atDisk: WizardState = { ...atImage, image: img, disks: [sda, sdb] };
const atConfirm: WizardState = { ...atDisk, disk: sda, plan: plan(img, sda) };
const atFlash: WizardState = { ...atConfirm, flashing: true };
const success = {
  ok: true as const,
  target: '/dev/sda',
  imageBytes: 1,
  bytesWritten: 1,
  seconds: 1,
  sha256: null,
  sha256Verified: false,
  readBackVerified: false,
  resumes: 0,
};
const atResult: WizardState = { ...atConfirm, outcome: success };
const atFailure: WizardState = {
  ...atConfirm,
  outcome: { ok: false, cancelled: false, message: 'boom', hint: 'retry' },
};

function press(s: WizardState, ...keys: WizardKey[]): [WizardState, Effect[]] {
  let effects: Effect[] = [];
  let state = s;
  for (const key of keys) [state, effects] = step(state, { type: 'key', key });
  return [state, effects];
}

describe('wizard state machine', () => {
  it('derives the stage from what is committed', () => {
    const table: Array<[WizardState, Stage]> = [
      [fresh, 'source'],
      [atImage, 'image'],
      [atDisk, 'disk'],
      [atConfirm, 'confirm'],
      [atFlash, 'flash'],
      [atResult, 'result'],
    ];
    for (const [state, stage] of table) expect(stageOf(state)).toBe(stage);
  });

  it('skips the source screen with --catalog or when local images exist', () => {
    expect(stageOf(initialState({ catalog: 'x.toml', localImagesExist: false }))).toBe('image');
    expect(stageOf(initialState({ catalog: null, localImagesExist: true }))).toBe('image');
    const [state, effects] = start({ catalog: 'http://h/Cat.toml', localImagesExist: false });
    expect(stageOf(state)).toBe('image');
    expect(effects).toEqual([{ type: 'loadImages', catalog: 'http://h/Cat.toml' }]);
  });

  it('back() clears the most recent commit, as upstream', () => {
    const table: Array<[WizardState, Stage, Partial<WizardState>]> = [
      [fresh, 'source', {}],
      [atImage, 'source', { chosen: false, catalog: null }],
      [atDisk, 'image', { image: null }],
      [atConfirm, 'disk', { disk: null, image: img }],
      // After a flash: back to the disk list with the image kept.
      [atResult, 'disk', { outcome: null, disk: null, image: img }],
      [atFlash, 'flash', { flashing: true }],
    ];
    for (const [state, stage, fields] of table) {
      const previous = back(state);
      expect(stageOf(previous)).toBe(stage);
      expect(previous).toMatchObject(fields);
    }
  });

  it('Esc goes back one step from every screen but the flash', () => {
    const table: Array<[WizardState, Stage]> = [
      [fresh, 'source'],
      [atImage, 'source'],
      [atDisk, 'image'],
      [atConfirm, 'disk'],
      [atResult, 'disk'],
      [atFailure, 'disk'],
      [atFlash, 'flash'],
    ];
    for (const [state, stage] of table) expect(stageOf(press(state, esc)[0])).toBe(stage);
  });

  it('source keys: d, l, c with typed text (case kept), Enter keeps, q quits', () => {
    const table: Array<[WizardKey[], string | null, Stage, Effect[]]> = [
      [
        [ch('d')],
        DEFAULT_CATALOG_URL,
        'image',
        [{ type: 'loadImages', catalog: DEFAULT_CATALOG_URL }],
      ],
      [[ch('l')], null, 'image', [{ type: 'loadImages', catalog: null }]],
      [
        [ch('c'), ch('http://Bty-Server:8080/Catalog.TOML'), enter],
        'http://Bty-Server:8080/Catalog.TOML',
        'image',
        [{ type: 'loadImages', catalog: 'http://Bty-Server:8080/Catalog.TOML' }],
      ],
      // Typed one key at a time, q and digits included, and Backspace works.
      [
        [
          ch('c'),
          ch('o'),
          ch('r'),
          ch('a'),
          ch('s'),
          ch('X'),
          { name: 'backspace' },
          ch(':'),
          ch('Q'),
          ch('q'),
          ch('1'),
          enter,
        ],
        'oras:Qq1',
        'image',
        [{ type: 'loadImages', catalog: 'oras:Qq1' }],
      ],
      // An empty custom source is the local root only.
      [[ch('c'), enter], null, 'image', [{ type: 'loadImages', catalog: null }]],
      // Esc abandons the typing, leaving the screen as it was.
      [[ch('c'), ch('x'), esc], null, 'source', []],
      [[ch('q')], null, 'source', [{ type: 'quit' }]],
      [[ctrlC], null, 'source', [{ type: 'quit' }]],
      [[ch('z')], null, 'source', []],
    ];
    for (const [keys, catalog, stage, effects] of table) {
      const [state, last] = press(fresh, ...keys);
      expect(state.catalog).toBe(catalog);
      expect(stageOf(state)).toBe(stage);
      expect(last).toEqual(effects);
    }
    expect(press(fresh, ch('z'))[0].notice).toMatch(/d, c, l/);
    expect(press(fresh, ch('c'), ch('x'), esc)[0].typing).toBeNull();
  });

  it('Enter on the source screen keeps a source chosen before', () => {
    const [state] = press({ ...atImage, catalog: 'c.toml' }, esc, enter);
    expect(stageOf(state)).toBe('image');
    expect(state.catalog).toBe('c.toml');
    // Same source: the loaded list is kept, no reload.
    expect(state.images).toEqual([img]);
  });

  it('image keys: arrows and digits move, Enter picks, r reloads, bad numbers explain', () => {
    const two = { ...atImage, images: [img, imageRow('b.img')] };
    expect(press(two, down)[0].cursor).toBe(1);
    expect(press(two, down, down, down)[0].cursor).toBe(1);
    expect(press(two, down, { name: 'up' })[0].cursor).toBe(0);
    expect(press(two, ch('2'))[0].cursor).toBe(1);
    const [picked, effects] = press(two, ch('2'), enter);
    expect(picked.image?.name).toBe('b.img');
    expect(stageOf(picked)).toBe('disk');
    expect(effects).toEqual([{ type: 'loadDisks' }]);
    expect(press(two, ch('7'))[0].notice).toMatch(/'7' is out of range; image numbers are 1..2/);
    expect(press(two, ch('r'))).toEqual([
      { ...two, images: null },
      [{ type: 'loadImages', catalog: null }],
    ]);
    expect(press({ ...atImage, images: [] }, enter)[1]).toEqual([
      { type: 'loadImages', catalog: null },
    ]);
    expect(press(two, ch('q'))[1]).toEqual([{ type: 'quit' }]);
  });

  it('picks past row 9 by typing both digits', () => {
    const many = {
      ...atImage,
      images: Array.from({ length: 12 }, (_, i) => imageRow(`i${i}.img`)),
    };
    const [state] = press(many, ch('1'), ch('2'), enter);
    expect(state.image?.name).toBe('i11.img');
  });

  it('disk keys: a refused disk explains itself, an eligible one moves to the plan', () => {
    const [refused, none] = press(atDisk, ch('2'), enter);
    expect(stageOf(refused)).toBe('disk');
    expect(refused.notice).toBe(
      '/dev/sdb cannot be flashed: /dev/sdb holds the running system (/)',
    );
    expect(none).toEqual([]);
    const [confirm, effects] = press(atDisk, enter);
    expect(stageOf(confirm)).toBe('confirm');
    expect(confirm.plan).toBeNull();
    expect(effects).toEqual([{ type: 'plan', image: img, disk: sda, readBack: false }]);
    expect(press(atDisk, ch('r'))[1]).toEqual([{ type: 'loadDisks' }]);
  });

  it('confirm keys: y flashes, v toggles read-back, anything else goes back', () => {
    const [flashing, effects] = press(atConfirm, ch('y'));
    expect(stageOf(flashing)).toBe('flash');
    expect(effects).toEqual([{ type: 'flash', image: img, disk: sda, readBack: false }]);
    const [toggled, replan] = press(atConfirm, ch('v'));
    expect(toggled.readBack).toBe(true);
    expect(replan).toEqual([{ type: 'plan', image: img, disk: sda, readBack: true }]);
    for (const key of [enter, ch('n'), ch('x'), esc]) {
      expect(stageOf(press(atConfirm, key)[0])).toBe('disk');
    }
    expect(press(atConfirm, ch('q'))[1]).toEqual([{ type: 'quit' }]);
  });

  it('confirm refuses to flash a refused plan or while probing', () => {
    const refused = {
      ...atConfirm,
      plan: plan(img, sda, [{ code: 'BTY_ERR_TARGET_TOO_SMALL' as const, message: 'too small' }]),
    };
    const [state, effects] = press(refused, ch('y'));
    expect(stageOf(state)).toBe('disk');
    expect(effects).toEqual([{ type: 'loadDisks' }]);
    const probing = { ...atConfirm, plan: null };
    expect(press(probing, ch('y'))).toEqual([probing, []]);
    expect(stageOf(press(probing, esc)[0])).toBe('disk');
    const failed = { ...atConfirm, plan: null, planError: 'image probe failed' };
    expect(stageOf(press(failed, ch('y'))[0])).toBe('disk');
  });

  it('ignores a plan for a disk no longer chosen', () => {
    const probing = { ...atConfirm, plan: null };
    const other = plan(img, disk('sdc'));
    expect(step(probing, { type: 'planned', plan: other })[0]).toBe(probing);
    expect(step(probing, { type: 'planned', plan: plan(img, sda) })[0].plan).not.toBeNull();
  });

  it('Ctrl-C during a flash asks first; y or a second Ctrl-C cancels', () => {
    const [asking] = press(atFlash, ctrlC);
    expect(asking.askCancel).toBe(true);
    expect(press(asking, ch('n'))[0].askCancel).toBe(false);
    const [cancelling, effects] = press(asking, ch('y'));
    expect(cancelling.cancelling).toBe(true);
    expect(effects).toEqual([{ type: 'cancelFlash' }]);
    expect(press(asking, ctrlC)[1]).toEqual([{ type: 'cancelFlash' }]);
    expect(press(atFlash, ch('q'))[0].askCancel).toBe(true);
    expect(press(atFlash, enter)).toEqual([atFlash, []]);
  });

  it('SIGTERM (terminate) cancels a flash at once, without asking; elsewhere it does nothing', () => {
    const [cancelling, effects] = step(atFlash, { type: 'terminate' });
    expect(cancelling).toMatchObject({ cancelling: true, askCancel: false });
    expect(effects).toEqual([{ type: 'cancelFlash' }]);
    // Even while the question is up, and only once.
    const [asking] = press(atFlash, ctrlC);
    expect(step(asking, { type: 'terminate' })).toEqual([
      { ...asking, askCancel: false, cancelling: true },
      [{ type: 'cancelFlash' }],
    ]);
    expect(step(cancelling, { type: 'terminate' })).toEqual([cancelling, []]);
    expect(step(atConfirm, { type: 'terminate' })).toEqual([atConfirm, []]);
  });

  it('progress and the outcome move the flash screen to the result', () => {
    const progress = {
      phase: 'write' as const,
      bytes_done: 5,
      bytes_total: 10,
      rate_bps: 1,
      eta_seconds: 5,
      resumes: 0,
    };
    expect(step(atFlash, { type: 'progress', progress })[0].progress).toEqual(progress);
    const [done] = step(atFlash, { type: 'flashed', outcome: success });
    expect(stageOf(done)).toBe('result');
  });

  it('result keys: b reboots, a flashes another, Enter retries a failure, q quits', () => {
    expect(press(atResult, ch('b'))[1]).toEqual([{ type: 'reboot' }]);
    // Enter never reboots: the wizard may run on a workstation.
    expect(press(atResult, enter)[1]).toEqual([]);
    const [another, load] = press(atResult, ch('a'));
    expect(stageOf(another)).toBe('image');
    expect(another.image).toBeNull();
    expect(load).toEqual([]);
    const [retry, replan] = press(atFailure, enter);
    expect(stageOf(retry)).toBe('confirm');
    expect(replan).toEqual([{ type: 'plan', image: img, disk: sda, readBack: false }]);
    expect(press(atFailure, ch('q'))[1]).toEqual([{ type: 'quit' }]);
  });

  it('--no-reboot: b says the reboot is skipped (the effect only logs that)', () => {
    const noReboot = { ...atResult, noReboot: true };
    expect(initialState({ catalog: null, localImagesExist: false, noReboot: true }).noReboot).toBe(
      true,
    );
    const [skipped, effects] = press(noReboot, ch('b'));
    expect(skipped.notice).toContain('Reboot skipped (--no-reboot)');
    expect(effects).toEqual([{ type: 'reboot' }]);
    expect(press(atResult, ch('b'))[0].notice).toBe('Rebooting now...');
  });

  it('after a changed disk, Enter goes back to a fresh disk list instead of retrying', () => {
    const changed: WizardState = {
      ...atConfirm,
      outcome: {
        ok: false,
        cancelled: false,
        diskChanged: true,
        message: '/dev/sda is no longer the disk you confirmed',
        hint: 'pick it again',
      },
    };
    const [again, effects] = press(changed, enter);
    expect(stageOf(again)).toBe('disk');
    expect(again.disk).toBeNull();
    expect(effects).toEqual([{ type: 'loadDisks' }]);
  });

  it('a catalog failure is shown until a later good load; a hand-over banner stays', () => {
    const handedOver = { ...atImage, banner: "bty: unknown plan mode 'x'" };
    const [failed] = step(handedOver, {
      type: 'imagesLoaded',
      rows: [img],
      error: 'catalog load failed: HTTP 404',
    });
    expect(failed.loadError).toBe('catalog load failed: HTTP 404');
    expect(failed.banner).toBe("bty: unknown plan mode 'x'");
    expect(failed.images).toEqual([img]);
    const [loaded] = step(failed, { type: 'imagesLoaded', rows: [], error: null });
    expect(loaded.loadError).toBeNull();
    expect(loaded.banner).toBe("bty: unknown plan mode 'x'");
  });
});
