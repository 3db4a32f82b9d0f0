/**
 * The DHCP / PXE cheatsheet's snippets: ready-to-paste configuration for the DHCP servers
 * operators run, filled in with this host's addresses. Pure text from `{host, port, tftpHost}`,
 * so each snippet is tested byte for byte (and the dnsmasq ones by dnsmasq itself).
 *
 * The chain every snippet sets up, with stock iPXE (Debian's `ipxe` package, no embedded
 * script):
 *
 *   firmware --DHCP--> an iPXE boot file: BIOS loads undionly.kpxe over TFTP, UEFI loads
 *   ipxe.efi over TFTP, or UEFI HTTP boot downloads http://<host>:<port>/boot/ipxe.efi
 *   --> iPXE DHCPs again, now saying who it is (user class "iPXE", option 175 present)
 *   --> that request is answered with http://<host>:<port>/pxe-bootstrap.ipxe, which chains
 *   to bty-web's per-machine script. Answering iPXE's own request differently is what stops
 *   the firmware -> iPXE -> iPXE loop.
 *
 * Machines are told apart by DHCP option 93 (client architecture): 0 BIOS, 7 and 9 x86-64
 * UEFI, 16 x86-64 UEFI HTTP boot (whose vendor class, option 60, starts with "HTTPClient" and
 * whose reply must carry option 60 "HTTPClient" too). bty's live environment is x86-64 only,
 * so 32-bit and ARM firmware types are left out.
 */

/** Where machines reach this server. */
export interface BootAddresses {
  /** bty-web's address for the machines (an IPv4 address: DHCP servers need one). */
  host: string;
  /** The TCP port bty-web listens on. */
  port: number;
  /** The TFTP server holding undionly.kpxe and ipxe.efi (often the same host). */
  tftpHost: string;
}

export type CheatsheetServer = 'dnsmasq' | 'dnsmasq-proxy' | 'isc-dhcpd' | 'kea' | 'openwrt';

export interface CheatsheetSnippet {
  server: CheatsheetServer;
  title: string;
  /** Where the text goes and how to make it take effect. */
  where: string;
  text: string;
}

/** The two URLs the snippets hand out. */
export function bootUrls({ host, port }: Pick<BootAddresses, 'host' | 'port'>): {
  bootstrap: string;
  httpBoot: string;
} {
  return {
    bootstrap: `http://${host}:${port}/pxe-bootstrap.ipxe`,
    httpBoot: `http://${host}:${port}/boot/ipxe.efi`,
  };
}

/** dnsmasq as the network's DHCP server (it already has a dhcp-range). */
export function dnsmasqSnippet(addresses: BootAddresses): string {
  const { bootstrap, httpBoot } = bootUrls(addresses);
  const tftp = addresses.tftpHost;
  return lines(
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
    `dhcp-boot=tag:bios,tag:!ipxe,undionly.kpxe,,${tftp}`,
    '# UEFI via TFTP (snponly.efi instead for a NIC that ipxe.efi has no driver for).',
    `dhcp-boot=tag:efi64,tag:!ipxe,ipxe.efi,,${tftp}`,
    '# UEFI HTTP boot: the firmware downloads iPXE from bty-web; the reply must say HTTPClient.',
    'dhcp-option-force=tag:efihttp,60,HTTPClient',
    `dhcp-boot=tag:efihttp,tag:!ipxe,${httpBoot}`,
    "# iPXE chain: iPXE's own request gets bty-web's bootstrap script (this ends the loop).",
    `dhcp-boot=tag:ipxe,${bootstrap}`,
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
  );
}

/** dnsmasq as proxy-DHCP beside a DHCP server that stays in charge of addresses. */
export function dnsmasqProxySnippet(addresses: BootAddresses): string {
  const { bootstrap, httpBoot } = bootUrls(addresses);
  const tftp = addresses.tftpHost;
  return lines(
    '# bty-web network boot with dnsmasq as proxy-DHCP: the existing DHCP server keeps handing',
    '# out addresses, this dnsmasq (on this host) only adds the boot information.',
    '# No DNS from this dnsmasq; drop the next line if it serves DNS as well.',
    'port=0',
    `dhcp-range=${addresses.host},proxy`,
    '# Answer UEFI HTTP boot clients too (dnsmasq otherwise answers only "PXEClient").',
    'dhcp-pxe-vendor=PXEClient,HTTPClient',
    'dhcp-match=set:ipxe,175',
    'dhcp-userclass=set:ipxe,iPXE',
    'dhcp-vendorclass=set:efihttp,HTTPClient',
    '',
    '# BIOS via TFTP: the firmware loads iPXE from the TFTP server.',
    `pxe-service=tag:!ipxe,x86PC,"bty: boot iPXE",undionly.kpxe,${tftp}`,
    '# UEFI via TFTP (BC_EFI is architecture 7, x86-64_EFI is 9).',
    `pxe-service=tag:!ipxe,BC_EFI,"bty: boot iPXE",ipxe.efi,${tftp}`,
    `pxe-service=tag:!ipxe,x86-64_EFI,"bty: boot iPXE",ipxe.efi,${tftp}`,
    '# UEFI HTTP boot: the firmware downloads iPXE from bty-web.',
    `dhcp-boot=tag:efihttp,tag:!ipxe,${httpBoot}`,
    "# iPXE chain: iPXE's own request gets bty-web's bootstrap script (this ends the loop).",
    `dhcp-boot=tag:ipxe,${bootstrap}`,
    'log-dhcp',
  );
}

/** ISC dhcpd (`/etc/dhcp/dhcpd.conf`). */
export function iscDhcpdSnippet(addresses: BootAddresses): string {
  const { bootstrap, httpBoot } = bootUrls(addresses);
  const tftp = addresses.tftpHost;
  return lines(
    '# bty-web network boot for ISC dhcpd. At the top of dhcpd.conf:',
    'option arch code 93 = unsigned integer 16;',
    '',
    '# Inside the subnet { } of the machines (or at the top level):',
    'if exists user-class and option user-class = "iPXE" {',
    "  # iPXE chain: iPXE's own request gets bty-web's bootstrap script (this ends the loop).",
    `  filename "${bootstrap}";`,
    '} elsif substring (option vendor-class-identifier, 0, 10) = "HTTPClient" {',
    '  # UEFI HTTP boot: the firmware downloads iPXE from bty-web.',
    '  option vendor-class-identifier "HTTPClient";',
    `  filename "${httpBoot}";`,
    '} elsif option arch = 00:07 or option arch = 00:09 {',
    '  # UEFI via TFTP (snponly.efi instead for a NIC that ipxe.efi has no driver for).',
    `  next-server ${tftp};`,
    '  filename "ipxe.efi";',
    '} elsif option arch = 00:00 {',
    '  # BIOS via TFTP.',
    `  next-server ${tftp};`,
    '  filename "undionly.kpxe";',
    '}',
  );
}

/**
 * Kea DHCPv4: the `client-classes` member of the `Dhcp4` object (plain JSON, no comments, so
 * it pastes into any kea-dhcp4.conf). Each class excludes iPXE, so exactly one answers.
 */
export function keaSnippet(addresses: BootAddresses): string {
  const { bootstrap, httpBoot } = bootUrls(addresses);
  const classes = [
    {
      name: 'bty-ipxe',
      test: "option[77].hex == 'iPXE'",
      'boot-file-name': bootstrap,
    },
    {
      name: 'bty-uefi-http',
      test: "not member('bty-ipxe') and substring(option[60].hex,0,10) == 'HTTPClient'",
      'boot-file-name': httpBoot,
      'option-data': [{ name: 'vendor-class-identifier', data: 'HTTPClient', 'always-send': true }],
    },
    {
      name: 'bty-uefi-tftp',
      test: "not member('bty-ipxe') and (option[93].hex == 0x0007 or option[93].hex == 0x0009)",
      'next-server': addresses.tftpHost,
      'boot-file-name': 'ipxe.efi',
    },
    {
      name: 'bty-bios-tftp',
      test: "not member('bty-ipxe') and option[93].hex == 0x0000",
      'next-server': addresses.tftpHost,
      'boot-file-name': 'undionly.kpxe',
    },
  ];
  return `"client-classes": ${JSON.stringify(classes, null, 2)}\n`;
}

/**
 * OpenWrt (its dnsmasq, configured through UCI). A UCI boot section takes one tag, so iPXE
 * cannot be excluded there; instead the iPXE entry comes last: dnsmasq answers with the last
 * matching dhcp-boot line, and OpenWrt writes them in section order.
 */
export function openwrtSnippet(addresses: BootAddresses): string {
  const { bootstrap, httpBoot } = bootUrls(addresses);
  const tftp = addresses.tftpHost;
  const section = (type: string, options: Array<[string, string]>, lists: string[] = []) => [
    `uci add dhcp ${type}`,
    ...options.map(([key, value]) => `uci set dhcp.@${type}[-1].${key}='${value}'`),
    ...lists.map((value) => `uci add_list dhcp.@${type}[-1].dhcp_option='${value}'`),
  ];
  return lines(
    '# bty-web network boot on OpenWrt (its dnsmasq hands out the addresses). Run on the router.',
    '# Who is asking: iPXE itself, else the firmware by client architecture or vendor class.',
    ...section('userclass', [
      ['networkid', 'ipxe'],
      ['userclass', 'iPXE'],
    ]),
    ...section('match', [
      ['networkid', 'bios'],
      ['match', 'option:client-arch,0'],
    ]),
    ...section('match', [
      ['networkid', 'efi64'],
      ['match', 'option:client-arch,7'],
    ]),
    ...section('match', [
      ['networkid', 'efi64'],
      ['match', 'option:client-arch,9'],
    ]),
    '# UEFI HTTP boot: the reply must say HTTPClient (option 60).',
    ...section(
      'vendorclass',
      [
        ['networkid', 'efihttp'],
        ['vendorclass', 'HTTPClient'],
        ['force', '1'],
      ],
      ['60,HTTPClient'],
    ),
    '# BIOS via TFTP, UEFI via TFTP, UEFI HTTP boot, then the iPXE chain: keep it last.',
    ...section('boot', [
      ['networkid', 'bios'],
      ['filename', 'undionly.kpxe'],
      ['servername', tftp],
      ['serveraddress', tftp],
    ]),
    ...section('boot', [
      ['networkid', 'efi64'],
      ['filename', 'ipxe.efi'],
      ['servername', tftp],
      ['serveraddress', tftp],
    ]),
    ...section('boot', [
      ['networkid', 'efihttp'],
      ['filename', httpBoot],
    ]),
    ...section('boot', [
      ['networkid', 'ipxe'],
      ['filename', bootstrap],
    ]),
    'uci commit dhcp',
    'service dnsmasq restart',
  );
}

/** Every snippet, in the order the page shows them. */
export function cheatsheetSnippets(addresses: BootAddresses): CheatsheetSnippet[] {
  return [
    {
      server: 'dnsmasq',
      title: 'dnsmasq (as the DHCP server)',
      where: 'Save as /etc/dnsmasq.d/bty.conf, check with dnsmasq --test, restart dnsmasq.',
      text: dnsmasqSnippet(addresses),
    },
    {
      server: 'dnsmasq-proxy',
      title: 'dnsmasq as proxy-DHCP (next to an existing DHCP server)',
      where:
        'Save as /etc/dnsmasq.d/bty-proxy.conf on this host and restart dnsmasq; open UDP ports ' +
        '67 and 4011. Older dnsmasq versions do not know dhcp-pxe-vendor: without that line, ' +
        'UEFI HTTP boot is not offered.',
      text: dnsmasqProxySnippet(addresses),
    },
    {
      server: 'isc-dhcpd',
      title: 'ISC dhcpd',
      where: 'Add to /etc/dhcp/dhcpd.conf, check with dhcpd -t, restart isc-dhcp-server.',
      text: iscDhcpdSnippet(addresses),
    },
    {
      server: 'kea',
      title: 'Kea (kea-dhcp4)',
      where:
        'Add as a member of the "Dhcp4" object in kea-dhcp4.conf (or of one subnet4 entry), ' +
        'check with kea-dhcp4 -t, restart kea-dhcp4.',
      text: keaSnippet(addresses),
    },
    {
      server: 'openwrt',
      title: 'OpenWrt',
      where:
        'Paste into a shell on the router; the sections land in /etc/config/dhcp. The TFTP ' +
        'server must be another host, or enable dnsmasq TFTP (enable_tftp, tftp_root).',
      text: openwrtSnippet(addresses),
    },
  ];
}

function lines(...parts: string[]): string {
  return `${parts.join('\n')}\n`;
}
