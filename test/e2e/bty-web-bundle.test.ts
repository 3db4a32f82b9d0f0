/**
 * `bin/bty-web export DIR` and `bin/bty-web import DIR` as an operator runs them (child
 * processes on a state folder in a temp dir; needs `make build`): a round trip through two
 * databases, upstream-only bundles, refusals with exit 2 naming the file and field.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { imageRefForSrc } from '../../src/core/refs.ts';

const run = promisify(execFile);
const BIN = new URL('../../bin/bty-web', import.meta.url).pathname;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-web-bundle-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs bin/bty-web on its own state folder; no bty.toml or BTY_* setting from outside. */
async function btyWeb(state: string, args: string[]): Promise<Outcome> {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('BTY_')) env[k] = v;
  env.BTY_PATHS_STATE_DIR = state;
  try {
    const { stdout, stderr } = await run(BIN, args, { env, timeout: 60_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

async function files(bundle: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const name of (await readdir(bundle)).sort()) {
    out[name] = await readFile(join(bundle, name), 'utf8');
  }
  return out;
}

/** A bundle's files with the export time taken out (two exports differ only there). */
async function content(bundle: string): Promise<Record<string, string>> {
  const out = await files(bundle);
  for (const name of Object.keys(out)) {
    out[name] = out[name]!.replace(/"exported_at": "[^"]*"/, '"exported_at": "-"');
  }
  return out;
}

async function writeBundle(bundle: string, docs: Record<string, unknown>): Promise<void> {
  await mkdir(bundle, { recursive: true });
  for (const [name, doc] of Object.entries(docs)) {
    await writeFile(join(bundle, name), JSON.stringify(doc, null, 2) + '\n');
  }
}

const AT = '2026-11-30T12:00:00Z';
const SRC = 'https://images.example/debian-13.img.zst';
const MACHINE = {
  mac: '52:54:00:12:34:56',
  bty_image_ref: imageRefForSrc(SRC),
  boot_mode: 'bty-flash-once',
  sanboot_drive: '0x80',
  target_disk_serial: 'WD-123',
  labels: ['bench', 'rack 1'],
  saw_flasher_boot: false,
  armed_at: null,
  discovered_at: '2026-11-20T07:00:00Z',
  last_seen_at: '2026-11-29T18:30:00.500Z',
  last_seen_ip: '192.0.2.10',
  last_flashed_at: null,
  created_at: '2026-11-20T07:00:00Z',
  updated_at: '2026-11-29T18:30:00.500Z',
};
const DISKS = [
  {
    model: 'WDC WD10',
    path: '/dev/sda',
    readonly: false,
    removable: false,
    serial: 'WD-123',
    size: '1000204886016',
    tran: 'sata',
    vendor: 'ATA',
  },
];

function fullBundle(): Record<string, unknown> {
  return {
    'inventory.json': {
      bty_export_version: 3,
      exported_at: AT,
      exported_by_bty_version: '0.0.1',
      machines: [
        {
          mac: MACHINE.mac,
          known_disks: DISKS,
          known_disks_at: '2026-11-29T18:31:00Z',
          hw_lshw: { id: 'bench-1', class: 'system' },
          hw_lshw_at: '2026-11-29T18:31:00Z',
        },
      ],
    },
    'machines.json': { bty_extension_version: 1, exported_at: AT, machines: [MACHINE] },
    'catalog.json': {
      bty_extension_version: 1,
      exported_at: AT,
      entries: [
        {
          ref: imageRefForSrc(SRC),
          name: 'debian-13.img.zst',
          src: SRC,
          sha256: 'cd'.repeat(32),
          format: 'img.zst',
          size_bytes: 123456789,
          description: 'Debian 13',
          arch: 'x86_64',
          created_at: '2026-11-19T00:00:00Z',
          updated_at: '2026-11-19T00:00:00Z',
        },
      ],
    },
    'settings.json': {
      bty_extension_version: 1,
      exported_at: AT,
      settings: [{ key: 'display.timezone', value: 'UTC', updated_at: AT }],
    },
  };
}

it('import, export, import into a second database, export: the same bundle', async () => {
  const source = join(dir, 'handmade');
  await writeBundle(source, fullBundle());
  const stateA = join(dir, 'state-a');
  const imported = await btyWeb(stateA, ['import', source]);
  expect(imported.code, imported.stderr).toBe(0);
  expect(imported.stdout).toBe(
    'bty-web import: 1 machines (with their records), 1 catalog entries (1 added, 0 updated, ' +
      '0 unchanged), 1 settings\n',
  );

  const first = join(dir, 'export-1');
  const exported = await btyWeb(stateA, ['export', first]);
  expect(exported.code, exported.stderr).toBe(0);
  expect(exported.stdout).toBe(`bty-web export -> ${first}: 1 machines\n`);
  const out = await files(first);
  expect(Object.keys(out)).toEqual([
    'catalog.json',
    'inventory.json',
    'machines.json',
    'settings.json',
  ]);
  const inventory = JSON.parse(out['inventory.json']!) as Record<string, unknown>;
  expect(inventory).toMatchObject({
    bty_export_version: 3,
    exported_by_bty_version: expect.stringMatching(/^\d+\.\d+\.\d+/) as unknown,
    machines: [
      {
        mac: MACHINE.mac,
        known_disks: DISKS,
        known_disks_at: '2026-11-29T18:31:00Z',
        hw_lshw: { class: 'system', id: 'bench-1' },
        hw_lshw_at: '2026-11-29T18:31:00Z',
      },
    ],
  });
  // What went in comes out: the handmade bundle, but for the export stamp.
  const handmade = fullBundle();
  for (const name of ['machines.json', 'catalog.json', 'settings.json']) {
    const doc = JSON.parse(out[name]!) as Record<string, unknown>;
    expect({ ...doc, exported_at: AT }, name).toEqual(handmade[name]);
  }

  const stateB = join(dir, 'state-b');
  expect((await btyWeb(stateB, ['import', first])).code).toBe(0);
  const second = join(dir, 'export-2');
  expect((await btyWeb(stateB, ['export', second])).code).toBe(0);
  expect(await content(second)).toEqual(await content(first));

  // A non-empty folder is refused (exit 2) unless forced.
  const refused = await btyWeb(stateB, ['export', second]);
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/the folder is not empty/);
  expect(refused.stderr).toMatch(/--force/);
  const forced = await btyWeb(stateB, ['export', '--force', second]);
  expect(forced.code, forced.stderr).toBe(0);
  expect(await content(second)).toEqual(await content(first));
});

it('an upstream bundle imports as bty-inventory machines, skipped items on stderr', async () => {
  const bundle = join(dir, 'upstream');
  await writeBundle(bundle, {
    'inventory.json': {
      bty_export_version: 3,
      exported_at: '2026-11-28T10:00:00.123456+00:00',
      exported_by_bty_version: '0.70.1',
      machines: [
        {
          mac: 'AA-BB-CC-DD-EE-01',
          known_disks: null,
          known_disks_at: null,
          hw_lshw: { blob: 'x'.repeat(4 * 1024 * 1024 + 1) },
          hw_lshw_at: '2026-11-28T09:00:00+00:00',
        },
        {
          mac: 'aa:bb:cc:dd:ee:02',
          known_disks: [{ path: '/dev/vda' }],
          known_disks_at: '2026-11-28T09:00:00+00:00',
          hw_lshw: null,
          hw_lshw_at: null,
        },
      ],
    },
  });
  const state = join(dir, 'state-upstream');
  const result = await btyWeb(state, ['import', bundle]);
  expect(result.code, result.stderr).toBe(0);
  expect(result.stdout).toBe('bty-web import: 2 machines (as bty-inventory)\n');
  expect(result.stderr).toMatch(
    /^ {2}skipped: machines\[0\] \(aa:bb:cc:dd:ee:01\): hw_lshw is \d+ bytes, over the/m,
  );
  const out = join(dir, 'upstream-out');
  expect((await btyWeb(state, ['export', out])).code).toBe(0);
  const machines = JSON.parse(await readFile(join(out, 'machines.json'), 'utf8')) as {
    machines: Array<{ mac: string; boot_mode: string; bty_image_ref: string | null }>;
  };
  expect(machines.machines.map((m) => [m.mac, m.boot_mode, m.bty_image_ref])).toEqual([
    ['aa:bb:cc:dd:ee:01', 'bty-inventory', null],
    ['aa:bb:cc:dd:ee:02', 'bty-inventory', null],
  ]);
});

it('a bad bundle exits 2 naming the file and field, and changes nothing', async () => {
  const state = join(dir, 'state-bad');
  const good = join(dir, 'good');
  await writeBundle(good, fullBundle());
  expect((await btyWeb(state, ['import', good])).code).toBe(0);
  const before = join(dir, 'bad-before');
  expect((await btyWeb(state, ['export', before])).code).toBe(0);

  const cases: Array<[string, (docs: Record<string, unknown>) => void, RegExp]> = [
    [
      'version 2',
      (d) => ((d['inventory.json'] as { bty_export_version: number }).bty_export_version = 2),
      /inventory\.json: bty_export_version: this bundle is version 2/,
    ],
    [
      'a bad label',
      (d) =>
        ((d['machines.json'] as { machines: Array<{ labels: string[] }> }).machines[0]!.labels = [
          'ok',
          '$(reboot)',
        ]),
      /machines\.json: machines\[0\]\.labels: "\$\(reboot\)" must be/,
    ],
    ['no inventory.json', (d) => delete d['inventory.json'], /inventory\.json: \(file\): missing/],
  ];
  for (const [name, change, message] of cases) {
    const docs = fullBundle();
    (docs['machines.json'] as { machines: Array<{ boot_mode: string }> }).machines[0]!.boot_mode =
      'ipxe-exit';
    change(docs);
    const bundle = join(dir, `bad-${name.replaceAll(' ', '-')}`);
    await writeBundle(bundle, docs);
    const result = await btyWeb(state, ['import', bundle]);
    expect(result.code, name).toBe(2);
    expect(result.stderr, name).toMatch(/BTY_ERR_BAD_INPUT/);
    expect(result.stderr, name).toMatch(message);
    expect(result.stderr, name).toMatch(/Nothing was imported/);
  }
  const malformed = join(dir, 'bad-malformed');
  await mkdir(malformed);
  await writeFile(join(malformed, 'inventory.json'), '{"bty_export_version": 3, "machines": [');
  const result = await btyWeb(state, ['import', malformed]);
  expect(result.code).toBe(2);
  expect(result.stderr).toMatch(/inventory\.json: \(file\): not valid JSON/);

  const after = join(dir, 'bad-after');
  expect((await btyWeb(state, ['export', after])).code).toBe(0);
  expect(await content(after)).toEqual(await content(before));
});

it.each([
  [['export'], /export needs exactly one folder/],
  [['import', 'a', 'b'], /import needs exactly one folder/],
  [['import', '--force', 'a'], /--force goes with export only/],
  [['export', '--port', '80', 'a'], /--host and --port go with serving only/],
])('bty-web %j exits 2 with the usage', async (args, message) => {
  const result = await btyWeb(join(dir, 'state-usage'), args);
  expect(result.code).toBe(2);
  expect(result.stderr).toMatch(message);
  expect(result.stderr).toMatch(/bty-web export DIR \[--force\]/);
});
