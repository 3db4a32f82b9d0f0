import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyMissing } from '../../src/web/netboot-files.ts';

let dir = '';
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-netboot-files-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('copyMissing', () => {
  it('copies what the target lacks, never replaces, skips folders and hidden files', async () => {
    const from = join(dir, 'seed');
    const to = join(dir, 'boot');
    await mkdir(join(from, 'sub'), { recursive: true });
    await writeFile(join(from, 'a.efi'), 'seed a');
    await writeFile(join(from, 'b.efi'), 'seed b');
    await writeFile(join(from, '.hidden'), 'no');
    await mkdir(to);
    await writeFile(join(to, 'b.efi'), "operator's b");
    expect((await copyMissing(from, to)).sort()).toEqual(['a.efi']);
    expect(await readFile(join(to, 'a.efi'), 'utf8')).toBe('seed a');
    expect(await readFile(join(to, 'b.efi'), 'utf8')).toBe("operator's b");
    expect((await readdir(to)).sort()).toEqual(['a.efi', 'b.efi']);
    // A second start copies nothing.
    expect(await copyMissing(from, to)).toEqual([]);
  });

  it('only the names asked for, following a symlinked source; a missing source copies nothing', async () => {
    const from = join(dir, 'pkg');
    const to = join(dir, 'tftp');
    await mkdir(from);
    await writeFile(join(from, 'real.kpxe'), 'kpxe');
    await symlink('real.kpxe', join(from, 'undionly.kpxe'));
    await writeFile(join(from, 'other'), 'x');
    expect(await copyMissing(from, to, ['undionly.kpxe', 'ipxe.efi'])).toEqual(['undionly.kpxe']);
    expect(await readdir(to)).toEqual(['undionly.kpxe']);
    expect(await readFile(join(to, 'undionly.kpxe'), 'utf8')).toBe('kpxe');
    expect(await copyMissing(join(dir, 'absent'), to)).toEqual([]);
  });
});
