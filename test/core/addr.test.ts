/**
 * Addresses of both families (src/core/addr.ts): family of a text, prefixes
 * of either family, and the IPv6 classes that decide who may arm (SPEC 9).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { armingClass, bigIntIpv6, familyOf, inCidr, ipv6BigInt, ipv6Class, ipv6NetworkCidr } from '../../src/core/addr.js';

test('familyOf: IPv4, IPv6 in any text form, nothing else (no zone index)', () => {
  assert.equal(familyOf('192.0.2.1'), 'ipv4');
  assert.equal(familyOf('2001:DB8::1'), 'ipv6');
  assert.equal(familyOf('::ffff:192.0.2.1'), 'ipv6');
  assert.equal(familyOf('::'), 'ipv6');
  for (const bad of ['', 'host', '192.0.2', '2001:db8::1/64', 'fe80::1%lan0', '1::2::3', '192.0.2.1 ']) assert.equal(familyOf(bad), null, bad);
});

test('inCidr: both families, never across them; prefix boundaries', () => {
  assert.equal(inCidr('10.1.2.3', '10.1.0.0/16'), true);
  assert.equal(inCidr('10.2.0.0', '10.1.0.0/16'), false);
  assert.equal(inCidr('2001:db8:1::5', '2001:db8:1::/64'), true);
  assert.equal(inCidr('2001:db8:1:0:ffff:ffff:ffff:ffff', '2001:db8:1::/64'), true);
  assert.equal(inCidr('2001:db8:1:1::', '2001:db8:1::/64'), false);
  assert.equal(inCidr('2001:DB8:1::5', '2001:db8::/32'), true, 'any text form');
  assert.equal(inCidr('2001:db8::1', '2001:db8::1/128'), true);
  assert.equal(inCidr('2001:db8::2', '2001:db8::1/128'), false);
  assert.equal(inCidr('::ffff:10.1.2.3', '10.1.0.0/16'), false, 'an IPv4-mapped address is IPv6');
  assert.equal(inCidr('10.1.2.3', '::/0'), false);
});

test('ipv6NetworkCidr and the 128-bit values: host bits cleared, canonical text', () => {
  assert.equal(ipv6NetworkCidr('2001:db8:1:2:3:4:5:6/64'), '2001:db8:1:2::/64');
  assert.equal(ipv6NetworkCidr('fd00:AB::1/48'), 'fd00:ab::/48');
  assert.equal(ipv6NetworkCidr('2001:db8::1/128'), '2001:db8::1/128');
  assert.equal(ipv6NetworkCidr('2001:db8:ffff::1/33'), '2001:db8:8000::/33');
  assert.equal(ipv6BigInt('::1'), 1n);
  assert.equal(ipv6BigInt('8000::'), 1n << 127n);
  assert.equal(bigIntIpv6((1n << 128n) - 1n), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
  assert.equal(bigIntIpv6(ipv6BigInt('2001:db8::a:0:0:1')), '2001:db8::a:0:0:1');
});

test('ipv6Class: only global and unique-local addresses arm', () => {
  const cases: [string, string, boolean][] = [
    ['2001:db8::10', 'global', true], ['2a00:1450::1', 'global', true], ['fd12:3456::1', 'unique-local', true],
    ['fc00::1', 'unique-local', true], ['fe80::1', 'link-local', false], ['febf::1', 'link-local', false],
    ['fec0::1', 'global', true], ['ff02::1', 'multicast', false], ['::1', 'loopback', false], ['::', 'unspecified', false],
    ['::ffff:192.0.2.1', 'ipv4-mapped', false],
  ];
  for (const [a, cls, arms] of cases) {
    assert.equal(ipv6Class(a), cls, a);
    assert.equal(armingClass(ipv6Class(a)), arms, a);
  }
});
