"""Unit tests of the Python probe's pure logic, run on the host's CPython against
the generated bindings (the host functions themselves only exist in the sandbox)."""

import unittest

from wit_world.imports import types

import probe


class ParseStatusesTest(unittest.TestCase):
    def test_codes_and_ranges(self):
        self.assertEqual(probe.parse_statuses("200, 204-206"), [(200, 200), (204, 206)])
        self.assertEqual(probe.parse_statuses("200-399"), [(200, 399)])

    def test_bad_specs(self):
        for bad in ["", "abc", "99", "600", "300-200"]:
            with self.assertRaises(ValueError, msg=bad):
                probe.parse_statuses(bad)


class ConfigTest(unittest.TestCase):
    def test_last_entry_wins(self):
        ctx = types.Context(types.Target("n", "127.0.0.1:1"), [("path", "/a"), ("path", "/b")], 1000)
        self.assertEqual(probe.config_dict(ctx), {"path": "/b"})

    def test_bad_config_is_broken(self):
        ctx = types.Context(types.Target("n", "127.0.0.1:1"), [("expect-status", "2yy")], 1000)
        with self.assertRaises(Exception) as caught:
            probe.WitWorld().run(ctx)
        self.assertIsInstance(caught.exception.value, types.Failure_Broken)


if __name__ == "__main__":
    unittest.main()
