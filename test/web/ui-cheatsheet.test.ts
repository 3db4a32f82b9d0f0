/**
 * The cheatsheet's snippets: exact text for a given host, port and TFTP server, and each one
 * checked by the real tool where it is installed (dnsmasq --test; dhcpd -t and kea-dhcp4 -t
 * when present), else parsed as far as the format allows.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bootUrls,
  cheatsheetSnippets,
  dnsmasqProxySnippet,
  dnsmasqSnippet,
  iscDhcpdSnippet,
  keaSnippet,
  openwrtSnippet,
  type BootAddresses,
} from '../../src/web/ui/cheatsheet.ts';

const run = promisify(execFile);

const ADDRESSES: BootAddresses = { host: '192.0.2.10', port: 8080, tftpHost: '192.0.2.20' };

/** The first of `paths` that exists (tools live in /usr/sbin, not always on PATH). */
function tool(...paths: string[]): string | undefined {
  return paths.find((p) => existsSync(p));
}
const DNSMASQ = tool('/usr/sbin/dnsmasq', '/usr/bin/dnsmasq');
const DHCPD = tool('/usr/sbin/dhcpd');
const KEA = tool('/usr/sbin/kea-dhcp4');

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'bty-cheatsheet-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function saved(name: string, text: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(path, text);
  return path;
}

/** `dnsmasq --test` on a file: resolves when dnsmasq accepts every line. */
async function dnsmasqAccepts(path: string): Promise<string> {
  const { stdout, stderr } = await run(DNSMASQ!, ['--test', '-C', path]);
  return stdout + stderr;
}

const text = (lines: string[]): string => `${lines.join('\n')}\n`;

const dnsmasqText = [
  '# bty-web network boot for a dnsmasq that already hands out addresses here (dhcp-range).',
  '# Who is asking: iPXE itself (option 175, user class "iPXE"), else the firmware by its',
  '# client architecture (option 93) or, for UEFI HTTP boot, its vendor class (option 60).',
  'dhcp-match=set:ipxe,175',
  'dhcp-userclass=set:ipxe,iPXE',
  'dhcp-match=set:bios,option:client-arch,0',
  'dhcp-match=set:efi64,option:client-arch,7',
  'dhcp-match=set:efi64,option:client-arch,9',
  'dhcp-vendorclass=set:efihttp,HTTPClient',
  '',
  '# BIOS via TFTP: the firmware loads iPXE from the TFTP server.',
  'dhcp-boot=tag:bios,tag:!ipxe,undionly.kpxe,,192.0.2.20',
  '# UEFI via TFTP (snponly.efi instead for a NIC that ipxe.efi has no driver for).',
  'dhcp-boot=tag:efi64,tag:!ipxe,ipxe.efi,,192.0.2.20',
  '# UEFI HTTP boot: the firmware downloads iPXE from bty-web; the reply must say HTTPClient.',
  'dhcp-option-force=tag:efihttp,60,HTTPClient',
  'dhcp-boot=tag:efihttp,tag:!ipxe,http://192.0.2.10:8080/boot/ipxe.efi',
  "# iPXE chain: iPXE's own request gets bty-web's bootstrap script (this ends the loop).",
  'dhcp-boot=tag:ipxe,http://192.0.2.10:8080/pxe-bootstrap.ipxe',
  '',
  '# TFTP: bty-web serves the iPXE files itself with [tftp] enabled = true (or run bty-tftp).',
  '# Or let this dnsmasq serve them (Debian package ipxe; its default of 50 transfers at once',
  '# is too few when a whole rack boots):',
  '#enable-tftp',
  '#tftp-root=/usr/lib/ipxe',
  '#tftp-max=4096',
  '# Virtual machines whose boot ROM is iPXE already (QEMU/KVM, libvirt, Proxmox) skip TFTP:',
  '# their first request says iPXE. To send BIOS ones through TFTP anyway, replace the two',
  '# set:ipxe lines above with these (the iPXE loaded over TFTP sends that user class):',
  '#dhcp-userclass=set:ipxe,bty-chained',
  '#dhcp-option-force=tag:bios,tag:!ipxe,77,bty-chained',
];

const dnsmasqProxyText = [
  '# bty-web network boot with dnsmasq as proxy-DHCP: the existing DHCP server keeps handing',
  '# out addresses, this dnsmasq (on this host) only adds the boot information.',
  '# No DNS from this dnsmasq; drop the next line if it serves DNS as well.',
  'port=0',
  'dhcp-range=192.0.2.10,proxy',
  '# Answer UEFI HTTP boot clients too (dnsmasq otherwise answers only "PXEClient").',
  'dhcp-pxe-vendor=PXEClient,HTTPClient',
  'dhcp-match=set:ipxe,175',
  'dhcp-userclass=set:ipxe,iPXE',
  'dhcp-vendorclass=set:efihttp,HTTPClient',
  '',
  '# BIOS via TFTP: the firmware loads iPXE from the TFTP server.',
  'pxe-service=tag:!ipxe,x86PC,"bty: boot iPXE",undionly.kpxe,192.0.2.20',
  '# UEFI via TFTP (BC_EFI is architecture 7, x86-64_EFI is 9).',
  'pxe-service=tag:!ipxe,BC_EFI,"bty: boot iPXE",ipxe.efi,192.0.2.20',
  'pxe-service=tag:!ipxe,x86-64_EFI,"bty: boot iPXE",ipxe.efi,192.0.2.20',
  '# UEFI HTTP boot: the firmware downloads iPXE from bty-web.',
  'dhcp-boot=tag:efihttp,tag:!ipxe,http://192.0.2.10:8080/boot/ipxe.efi',
  "# iPXE chain: iPXE's own request gets bty-web's bootstrap script (this ends the loop).",
  'dhcp-boot=tag:ipxe,http://192.0.2.10:8080/pxe-bootstrap.ipxe',
  'log-dhcp',
];

const iscDhcpdText = [
  '# bty-web network boot for ISC dhcpd. At the top of dhcpd.conf:',
  'option arch code 93 = unsigned integer 16;',
  '',
  '# Inside the subnet { } of the machines (or at the top level):',
  'if exists user-class and option user-class = "iPXE" {',
  "  # iPXE chain: iPXE's own request gets bty-web's bootstrap script (this ends the loop).",
  '  filename "http://192.0.2.10:8080/pxe-bootstrap.ipxe";',
  '} elsif substring (option vendor-class-identifier, 0, 10) = "HTTPClient" {',
  '  # UEFI HTTP boot: the firmware downloads iPXE from bty-web.',
  '  option vendor-class-identifier "HTTPClient";',
  '  filename "http://192.0.2.10:8080/boot/ipxe.efi";',
  '} elsif option arch = 00:07 or option arch = 00:09 {',
  '  # UEFI via TFTP (snponly.efi instead for a NIC that ipxe.efi has no driver for).',
  '  next-server 192.0.2.20;',
  '  filename "ipxe.efi";',
  '} elsif option arch = 00:00 {',
  '  # BIOS via TFTP.',
  '  next-server 192.0.2.20;',
  '  filename "undionly.kpxe";',
  '}',
];

const keaText = [
  '"client-classes": [',
  '  {',
  '    "name": "bty-ipxe",',
  '    "test": "option[77].hex == \'iPXE\'",',
  '    "boot-file-name": "http://192.0.2.10:8080/pxe-bootstrap.ipxe"',
  '  },',
  '  {',
  '    "name": "bty-uefi-http",',
  '    "test": "not member(\'bty-ipxe\') and substring(option[60].hex,0,10) == \'HTTPClient\'",',
  '    "boot-file-name": "http://192.0.2.10:8080/boot/ipxe.efi",',
  '    "option-data": [',
  '      {',
  '        "name": "vendor-class-identifier",',
  '        "data": "HTTPClient",',
  '        "always-send": true',
  '      }',
  '    ]',
  '  },',
  '  {',
  '    "name": "bty-uefi-tftp",',
  '    "test": "not member(\'bty-ipxe\') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)",',
  '    "next-server": "192.0.2.20",',
  '    "boot-file-name": "ipxe.efi"',
  '  },',
  '  {',
  '    "name": "bty-bios-tftp",',
  '    "test": "not member(\'bty-ipxe\') and option[93].hex == 0x0000",',
  '    "next-server": "192.0.2.20",',
  '    "boot-file-name": "undionly.kpxe"',
  '  }',
  ']',
];

const openwrtText = [
  '# bty-web network boot on OpenWrt (its dnsmasq hands out the addresses). Run on the router.',
  '# Who is asking: iPXE itself, else the firmware by client architecture or vendor class.',
  'uci add dhcp userclass',
  "uci set dhcp.@userclass[-1].networkid='ipxe'",
  "uci set dhcp.@userclass[-1].userclass='iPXE'",
  'uci add dhcp match',
  "uci set dhcp.@match[-1].networkid='bios'",
  "uci set dhcp.@match[-1].match='option:client-arch,0'",
  'uci add dhcp match',
  "uci set dhcp.@match[-1].networkid='efi64'",
  "uci set dhcp.@match[-1].match='option:client-arch,7'",
  'uci add dhcp match',
  "uci set dhcp.@match[-1].networkid='efi64'",
  "uci set dhcp.@match[-1].match='option:client-arch,9'",
  '# UEFI HTTP boot: the reply must say HTTPClient (option 60).',
  'uci add dhcp vendorclass',
  "uci set dhcp.@vendorclass[-1].networkid='efihttp'",
  "uci set dhcp.@vendorclass[-1].vendorclass='HTTPClient'",
  "uci set dhcp.@vendorclass[-1].force='1'",
  "uci add_list dhcp.@vendorclass[-1].dhcp_option='60,HTTPClient'",
  '# BIOS via TFTP, UEFI via TFTP, UEFI HTTP boot, then the iPXE chain: keep it last.',
  'uci add dhcp boot',
  "uci set dhcp.@boot[-1].networkid='bios'",
  "uci set dhcp.@boot[-1].filename='undionly.kpxe'",
  "uci set dhcp.@boot[-1].servername='192.0.2.20'",
  "uci set dhcp.@boot[-1].serveraddress='192.0.2.20'",
  'uci add dhcp boot',
  "uci set dhcp.@boot[-1].networkid='efi64'",
  "uci set dhcp.@boot[-1].filename='ipxe.efi'",
  "uci set dhcp.@boot[-1].servername='192.0.2.20'",
  "uci set dhcp.@boot[-1].serveraddress='192.0.2.20'",
  'uci add dhcp boot',
  "uci set dhcp.@boot[-1].networkid='efihttp'",
  "uci set dhcp.@boot[-1].filename='http://192.0.2.10:8080/boot/ipxe.efi'",
  'uci add dhcp boot',
  "uci set dhcp.@boot[-1].networkid='ipxe'",
  "uci set dhcp.@boot[-1].filename='http://192.0.2.10:8080/pxe-bootstrap.ipxe'",
  'uci commit dhcp',
  'service dnsmasq restart',
];

describe('snippet texts', () => {
  it('names the bootstrap script and the HTTP boot file on the host and port', () => {
    expect(bootUrls(ADDRESSES)).toEqual({
      bootstrap: 'http://192.0.2.10:8080/pxe-bootstrap.ipxe',
      httpBoot: 'http://192.0.2.10:8080/boot/ipxe.efi',
    });
  });

  it('dnsmasq as the DHCP server', () => {
    expect(dnsmasqSnippet(ADDRESSES)).toBe(text(dnsmasqText));
  });

  it('dnsmasq as proxy-DHCP', () => {
    expect(dnsmasqProxySnippet(ADDRESSES)).toBe(text(dnsmasqProxyText));
  });

  it('ISC dhcpd', () => {
    expect(iscDhcpdSnippet(ADDRESSES)).toBe(text(iscDhcpdText));
  });

  it('Kea', () => {
    expect(keaSnippet(ADDRESSES)).toBe(text(keaText));
  });

  it('OpenWrt', () => {
    expect(openwrtSnippet(ADDRESSES)).toBe(text(openwrtText));
  });

  it('lists the five servers in page order, each with its own text', () => {
    const snippets = cheatsheetSnippets(ADDRESSES);
    expect(snippets.map((s) => s.server)).toEqual([
      'dnsmasq',
      'dnsmasq-proxy',
      'isc-dhcpd',
      'kea',
      'openwrt',
    ]);
    expect(snippets[2]!.text).toBe(iscDhcpdSnippet(ADDRESSES));
    for (const s of snippets) expect(s.where.length).toBeGreaterThan(10);
  });

  it('follows other addresses everywhere (nothing is left from another host)', () => {
    const other = { host: '10.1.2.3', port: 9000, tftpHost: '10.1.2.4' };
    for (const s of cheatsheetSnippets(other)) {
      expect(s.text, s.server).not.toContain('192.0.2.');
      expect(s.text, s.server).toContain('http://10.1.2.3:9000/pxe-bootstrap.ipxe');
    }
    // The TFTP server appears wherever a firmware fetches over TFTP.
    expect(dnsmasqSnippet(other)).toContain('undionly.kpxe,,10.1.2.4');
    expect(iscDhcpdSnippet(other)).toContain('next-server 10.1.2.4;');
    expect(keaSnippet(other)).toContain('"next-server": "10.1.2.4"');
  });
});

describe('dnsmasq accepts its snippets', () => {
  it.skipIf(!DNSMASQ)('as the DHCP server (dnsmasq --test)', async () => {
    const path = await saved('dnsmasq.conf', dnsmasqSnippet(ADDRESSES));
    expect(await dnsmasqAccepts(path)).toMatch(/syntax check OK/);
  });

  it.skipIf(!DNSMASQ)('as proxy-DHCP (dnsmasq --test)', async () => {
    const path = await saved('dnsmasq-proxy.conf', dnsmasqProxySnippet(ADDRESSES));
    expect(await dnsmasqAccepts(path)).toMatch(/syntax check OK/);
  });

  it.skipIf(!DNSMASQ)('refuses a broken line (the check is real)', async () => {
    const path = await saved('broken.conf', 'dhcp-boot=tag:ipxe\ndhcp-nonsense=1\n');
    await expect(dnsmasqAccepts(path)).rejects.toThrow();
  });

  it("OpenWrt's UCI sections become these lines (OpenWrt's dnsmasq.init rules)", () => {
    // A UCI boot section has one tag, so the iPXE entry must be the last: dnsmasq answers
    // with the last matching dhcp-boot line (checked against dnsmasq 2.90 by hand).
    expect(openwrtToDnsmasq(openwrtSnippet(ADDRESSES))).toEqual([
      'dhcp-boot=net:bios,undionly.kpxe,192.0.2.20,192.0.2.20',
      'dhcp-boot=net:efi64,ipxe.efi,192.0.2.20,192.0.2.20',
      'dhcp-boot=net:efihttp,http://192.0.2.10:8080/boot/ipxe.efi',
      'dhcp-boot=net:ipxe,http://192.0.2.10:8080/pxe-bootstrap.ipxe',
      'dhcp-userclass=set:ipxe,iPXE',
      'dhcp-match=set:bios,option:client-arch,0',
      'dhcp-match=set:efi64,option:client-arch,7',
      'dhcp-match=set:efi64,option:client-arch,9',
      'dhcp-vendorclass=set:efihttp,HTTPClient',
      'dhcp-option-force=efihttp,60,HTTPClient',
    ]);
  });

  it.skipIf(!DNSMASQ)('accepts the lines OpenWrt writes (dnsmasq --test)', async () => {
    const lines = openwrtToDnsmasq(openwrtSnippet(ADDRESSES));
    const path = await saved('openwrt.conf', `${lines.join('\n')}\n`);
    expect(await dnsmasqAccepts(path)).toMatch(/syntax check OK/);
  });
});

describe('ISC dhcpd snippet', () => {
  it('is well formed: braces balance and every statement ends with a semicolon', () => {
    let depth = 0;
    for (const raw of iscDhcpdSnippet(ADDRESSES).split('\n')) {
      const line = raw.replace(/#.*$/, '').trim();
      if (line === '') continue;
      depth += (line.match(/\{/g) ?? []).length - (line.match(/\}/g) ?? []).length;
      expect(depth, raw).toBeGreaterThanOrEqual(0);
      if (!line.endsWith('{') && !line.endsWith('}')) expect(line, raw).toMatch(/;$/);
      expect((line.match(/"/g) ?? []).length % 2, raw).toBe(0);
    }
    expect(depth).toBe(0);
  });

  it.skipIf(!DHCPD)('is accepted by dhcpd -t', async () => {
    const conf = `${iscDhcpdSnippet(ADDRESSES)}subnet 192.0.2.0 netmask 255.255.255.0 {\n  range 192.0.2.100 192.0.2.200;\n}\n`;
    const path = await saved('dhcpd.conf', conf);
    await run(DHCPD!, ['-4', '-t', '-cf', path]);
  });
});

describe('Kea snippet', () => {
  it('is the client-classes member of the Dhcp4 object, as plain JSON', () => {
    const dhcp4 = JSON.parse(`{${keaSnippet(ADDRESSES)}}`) as {
      'client-classes': Array<Record<string, unknown>>;
    };
    const classes = dhcp4['client-classes'];
    expect(classes.map((c) => c.name)).toEqual([
      'bty-ipxe',
      'bty-uefi-http',
      'bty-uefi-tftp',
      'bty-bios-tftp',
    ]);
    // Every firmware class excludes iPXE, so iPXE's own request only gets the bootstrap URL.
    for (const c of classes.slice(1)) expect(c.test).toMatch(/^not member\('bty-ipxe'\) and /);
    expect(classes[0]!['boot-file-name']).toBe('http://192.0.2.10:8080/pxe-bootstrap.ipxe');
  });

  it.skipIf(!KEA)('is accepted by kea-dhcp4 -t', async () => {
    const conf = `{"Dhcp4": {${keaSnippet(ADDRESSES)}, "subnet4": []}}\n`;
    const path = await saved('kea-dhcp4.conf', conf);
    await run(KEA!, ['-t', path]);
  });
});

/**
 * The dnsmasq lines OpenWrt's dnsmasq.init writes for the snippet's `uci add` / `uci set` /
 * `uci add_list` commands: boot sections first (in order), then the class sections, with the
 * rules of dhcp_boot_add, dhcp_userclass_add, dhcp_match_add and dhcp_vendorclass_add.
 */
function openwrtToDnsmasq(script: string): string[] {
  const sections: Array<{ type: string; options: Record<string, string>; lists: string[] }> = [];
  for (const line of script.split('\n')) {
    const add = /^uci add dhcp (\w+)$/.exec(line);
    if (add) {
      sections.push({ type: add[1]!, options: {}, lists: [] });
      continue;
    }
    const set = /^uci (set|add_list) dhcp\.@(\w+)\[-1\]\.(\w+)='([^']*)'$/.exec(line);
    if (!set) continue;
    const current = sections.at(-1)!;
    expect(set[2], line).toBe(current.type);
    if (set[1] === 'add_list') current.lists.push(set[4]!);
    else current.options[set[3]!] = set[4]!;
  }
  const out: string[] = [];
  for (const { type, options: o } of sections) {
    if (type !== 'boot') continue;
    // dhcp_boot_add drops a section with a server address but no server name.
    if (o.serveraddress && !o.servername) continue;
    const tail = [o.servername, o.serveraddress]
      .filter(Boolean)
      .map((v) => `,${v}`)
      .join('');
    out.push(`dhcp-boot=${o.networkid ? `net:${o.networkid},` : ''}${o.filename}${tail}`);
  }
  for (const { type, options: o, lists } of sections) {
    const id = o.networkid!;
    if (type === 'userclass') out.push(`dhcp-userclass=set:${id},${o.userclass}`);
    else if (type === 'match') out.push(`dhcp-match=set:${id},${o.match}`);
    else if (type === 'vendorclass') out.push(`dhcp-vendorclass=set:${id},${o.vendorclass}`);
    else continue;
    const force = o.force === '1' ? '-force' : '';
    for (const option of lists) out.push(`dhcp-option${force}=${id},${option}`);
  }
  return out;
}
