import unittest

from policy import parse_config


class ParseConfig(unittest.TestCase):
    def test_good_configurations(self):
        limit = parse_config('{"per_minute": 30}')
        self.assertEqual((limit.per_minute, limit.burst), (30, 5))
        self.assertEqual(parse_config('{"per_minute": 30, "burst": 2}').burst, 2)
        self.assertEqual(limit.retry_after_secs(1200), 2)

    def test_errors_name_the_field(self):
        for config, error in [
            ("{}", "per_minute: required"),
            ('{"per_minute": 0}', "per_minute: must be"),
            ('{"per_minute": 1, "burst": 0}', "burst: must be"),
            ('{"per_minute": 1, "brust": 2}', "unknown field `brust`"),
            ("[]", "config: must be an object"),
            ("{", "config: not valid JSON"),
        ]:
            with self.assertRaises(ValueError, msg=config) as caught:
                parse_config(config)
            self.assertTrue(str(caught.exception).startswith(error), str(caught.exception))


if __name__ == "__main__":
    unittest.main()
