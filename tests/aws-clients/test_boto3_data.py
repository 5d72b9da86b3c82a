"""boto3 against kmsd's TCP listener: keys, the data plane, DescribeKey by
every name, and ListKeys' paging, as AWS KMS answers them."""

import datetime
import uuid

from harness import ACCOUNT_ID, REGION, KmsdTestCase

CONTEXT = {"app": "billing", "tenant": "t-42"}


class CreateAndDescribe(KmsdTestCase):
    def test_create_key_answers_aws_key_metadata(self):
        before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        meta = self.kms.create_key(
            Description="made by boto3", Tags=[{"TagKey": "team", "TagValue": "pay"}]
        )["KeyMetadata"]
        key = meta["KeyId"]
        uuid.UUID(key)  # AWS's key ids are UUIDs
        self.assertEqual(meta["Arn"], f"arn:aws:kms:{REGION}:{ACCOUNT_ID}:key/{key}")
        self.assertEqual(meta.get("AWSAccountId"), ACCOUNT_ID, meta)
        self.assertEqual(meta["Description"], "made by boto3")
        self.assertIs(meta["Enabled"], True)
        self.assertEqual(meta["KeyState"], "Enabled")
        self.assertEqual(meta["KeyUsage"], "ENCRYPT_DECRYPT")
        self.assertEqual(meta["KeySpec"], "SYMMETRIC_DEFAULT")
        self.assertEqual(meta["EncryptionAlgorithms"], ["SYMMETRIC_DEFAULT"])
        self.assertEqual(meta["Origin"], "AWS_KMS")
        self.assertEqual(meta["KeyManager"], "CUSTOMER")
        self.assertIs(meta["MultiRegion"], False)
        # botocore parsed the epoch seconds into an aware datetime.
        self.assertIsInstance(meta["CreationDate"], datetime.datetime)
        self.assertGreaterEqual(meta["CreationDate"], before)
        self.assertLess(
            meta["CreationDate"] - before, datetime.timedelta(minutes=1), meta
        )
        tags = self.kms.list_resource_tags(KeyId=key)["Tags"]
        self.assertEqual(tags, [{"TagKey": "team", "TagValue": "pay"}])

    def test_describe_key_by_id_key_arn_alias_and_alias_arn(self):
        key = self.create_key(Description="four names")
        self.kms.create_alias(AliasName="alias/four-names", TargetKeyId=key)
        for name in (
            key,
            self.kmsd.key_arn(key),
            "alias/four-names",
            self.kmsd.alias_arn("alias/four-names"),
        ):
            with self.subTest(name=name):
                meta = self.kms.describe_key(KeyId=name)["KeyMetadata"]
                self.assertEqual(meta["KeyId"], key)
                self.assertEqual(meta["Arn"], self.kmsd.key_arn(key))
                self.assertEqual(meta["Description"], "four names")

    def test_describe_key_of_a_missing_key_is_not_found(self):
        missing = str(uuid.uuid4())
        for name in (
            missing,
            self.kmsd.key_arn(missing),
            "alias/no-such-alias",
            self.kmsd.alias_arn("alias/no-such-alias"),
        ):
            with self.subTest(name=name):
                with self.assertRaises(self.kms.exceptions.NotFoundException) as e:
                    self.kms.describe_key(KeyId=name)
                self.assertError(e, "NotFoundException", 404)
                self.assertTrue(self.assertError(e, "NotFoundException"), "a message")


class DataPlane(KmsdTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.key = cls.kms.create_key(Description="data")["KeyMetadata"]["KeyId"]
        cls.other_key = cls.kms.create_key(Description="other")["KeyMetadata"]["KeyId"]

    def test_encrypt_and_decrypt_with_an_encryption_context(self):
        secret = b"a secret that goes through boto3 \x00\xff"
        enc = self.kms.encrypt(KeyId=self.key, Plaintext=secret, EncryptionContext=CONTEXT)
        self.assertEqual(enc["KeyId"], self.kmsd.key_arn(self.key))
        self.assertEqual(enc["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT")
        blob = enc["CiphertextBlob"]
        self.assertIsInstance(blob, bytes)
        self.assertNotIn(secret, blob)

        dec = self.kms.decrypt(CiphertextBlob=blob, EncryptionContext=CONTEXT)
        self.assertEqual(dec["Plaintext"], secret)
        self.assertEqual(dec["KeyId"], self.kmsd.key_arn(self.key))
        self.assertEqual(dec["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT")
        # Naming the key (by id, ARN or alias) is allowed, and checked.
        self.kms.create_alias(AliasName="alias/data", TargetKeyId=self.key)
        for name in (self.key, self.kmsd.key_arn(self.key), "alias/data"):
            with self.subTest(key_id=name):
                dec = self.kms.decrypt(
                    CiphertextBlob=blob, EncryptionContext=CONTEXT, KeyId=name
                )
                self.assertEqual(dec["Plaintext"], secret)

        # The context is part of the ciphertext's authentication: another
        # context, a part of it, or none, and the ciphertext is invalid.
        for context in ({"app": "billing", "tenant": "t-43"}, {"app": "billing"}, None):
            with self.subTest(context=context):
                args = {"CiphertextBlob": blob}
                if context is not None:
                    args["EncryptionContext"] = context
                with self.assertRaises(
                    self.kms.exceptions.InvalidCiphertextException
                ) as e:
                    self.kms.decrypt(**args)
                self.assertError(e, "InvalidCiphertextException", 400)

    def test_a_tampered_ciphertext_is_invalid(self):
        blob = bytearray(self.kms.encrypt(KeyId=self.key, Plaintext=b"x")["CiphertextBlob"])
        blob[-1] ^= 1
        with self.assertRaises(self.kms.exceptions.InvalidCiphertextException) as e:
            self.kms.decrypt(CiphertextBlob=bytes(blob))
        self.assertError(e, "InvalidCiphertextException", 400)

    def test_decrypt_naming_another_key_is_incorrect_key(self):
        blob = self.kms.encrypt(KeyId=self.key, Plaintext=b"x")["CiphertextBlob"]
        with self.assertRaises(self.kms.exceptions.IncorrectKeyException) as e:
            self.kms.decrypt(CiphertextBlob=blob, KeyId=self.other_key)
        self.assertError(e, "IncorrectKeyException", 400)

    def test_generate_data_key_plaintext_decrypts_back(self):
        for args, size in (
            ({"KeySpec": "AES_256"}, 32),
            ({"KeySpec": "AES_128"}, 16),
            ({"NumberOfBytes": 64}, 64),
        ):
            with self.subTest(args=args):
                dk = self.kms.generate_data_key(
                    KeyId=self.key, EncryptionContext=CONTEXT, **args
                )
                self.assertEqual(len(dk["Plaintext"]), size)
                self.assertEqual(dk["KeyId"], self.kmsd.key_arn(self.key))
                back = self.kms.decrypt(
                    CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=CONTEXT
                )
                self.assertEqual(back["Plaintext"], dk["Plaintext"])
        # Two data keys differ.
        a = self.kms.generate_data_key(KeyId=self.key, KeySpec="AES_256")["Plaintext"]
        b = self.kms.generate_data_key(KeyId=self.key, KeySpec="AES_256")["Plaintext"]
        self.assertNotEqual(a, b)

    def test_generate_data_key_without_plaintext(self):
        dk = self.kms.generate_data_key_without_plaintext(
            KeyId=self.key, KeySpec="AES_256", EncryptionContext=CONTEXT
        )
        self.assertNotIn("Plaintext", dk)
        self.assertEqual(dk["KeyId"], self.kmsd.key_arn(self.key))
        back = self.kms.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=CONTEXT)
        self.assertEqual(len(back["Plaintext"]), 32)

    def test_re_encrypt_moves_a_ciphertext_to_another_key_and_context(self):
        secret = b"moved between keys"
        blob = self.kms.encrypt(KeyId=self.key, Plaintext=secret, EncryptionContext=CONTEXT)[
            "CiphertextBlob"
        ]
        new_context = {"app": "archive"}
        re = self.kms.re_encrypt(
            CiphertextBlob=blob,
            SourceEncryptionContext=CONTEXT,
            DestinationKeyId=self.other_key,
            DestinationEncryptionContext=new_context,
        )
        self.assertEqual(re["SourceKeyId"], self.kmsd.key_arn(self.key))
        self.assertEqual(re["KeyId"], self.kmsd.key_arn(self.other_key))
        self.assertEqual(re["SourceEncryptionAlgorithm"], "SYMMETRIC_DEFAULT")
        self.assertEqual(re["DestinationEncryptionAlgorithm"], "SYMMETRIC_DEFAULT")
        dec = self.kms.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext=new_context)
        self.assertEqual(dec["Plaintext"], secret)
        self.assertEqual(dec["KeyId"], self.kmsd.key_arn(self.other_key))
        with self.assertRaises(self.kms.exceptions.InvalidCiphertextException):
            self.kms.decrypt(CiphertextBlob=re["CiphertextBlob"], EncryptionContext=CONTEXT)
        # The source context is checked too.
        with self.assertRaises(self.kms.exceptions.InvalidCiphertextException):
            self.kms.re_encrypt(CiphertextBlob=blob, DestinationKeyId=self.other_key)

    def test_generate_random(self):
        for n in (1, 32, 1024):
            with self.subTest(n=n):
                self.assertEqual(len(self.kms.generate_random(NumberOfBytes=n)["Plaintext"]), n)
        self.assertNotEqual(
            self.kms.generate_random(NumberOfBytes=32)["Plaintext"],
            self.kms.generate_random(NumberOfBytes=32)["Plaintext"],
        )
        # Past AWS's bound (botocore checks only the minimum).
        with self.assertRaises(self.kms.exceptions.ClientError) as e:
            self.kms.generate_random(NumberOfBytes=1025)
        self.assertError(e, "ValidationException", 400)


class Refusals(KmsdTestCase):
    """Requests AWS refuses, with AWS's typed errors and statuses."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.key = cls.kms.create_key()["KeyMetadata"]["KeyId"]

    def test_checks_botocore_leaves_to_the_service(self):
        for name, call in (
            ("both", lambda: self.kms.generate_data_key(
                KeyId=self.key, KeySpec="AES_256", NumberOfBytes=32)),
            ("neither", lambda: self.kms.generate_data_key(KeyId=self.key)),
            ("4097 bytes", lambda: self.kms.encrypt(KeyId=self.key, Plaintext=b"x" * 4097)),
            ("Limit 1001", lambda: self.kms.list_keys(Limit=1001)),
        ):
            with self.subTest(name):
                with self.assertRaises(self.kms.exceptions.ClientError) as e:
                    call()
                self.assertError(e, "ValidationException", 400)
        with self.assertRaises(self.kms.exceptions.TagException) as e:
            self.kms.tag_resource(KeyId=self.key, Tags=[{"TagKey": "aws:x", "TagValue": "y"}])
        self.assertError(e, "TagException", 400)

    def test_an_arn_of_another_region_or_account_is_not_found(self):
        for arn in (
            f"arn:aws:kms:eu-west-1:{ACCOUNT_ID}:key/{self.key}",
            f"arn:aws:kms:{REGION}:111122223333:key/{self.key}",
        ):
            with self.subTest(arn=arn):
                with self.assertRaises(self.kms.exceptions.NotFoundException) as e:
                    self.kms.describe_key(KeyId=arn)
                self.assertError(e, "NotFoundException", 404)

    def test_dry_run_answers_dry_run_operation(self):
        with self.assertRaises(self.kms.exceptions.DryRunOperationException) as e:
            self.kms.encrypt(KeyId=self.key, Plaintext=b"x", DryRun=True)
        self.assertError(e, "DryRunOperationException", 412)


class ListKeysPaging(KmsdTestCase):
    """A daemon of its own: exactly the keys made here."""

    COUNT = 7

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.keys = {
            cls.kms.create_key(Description=f"page {i}")["KeyMetadata"]["KeyId"]
            for i in range(cls.COUNT)
        }

    def test_list_keys_in_one_page(self):
        page = self.kms.list_keys()
        self.assertIs(page["Truncated"], False)
        self.assertNotIn("NextMarker", page)
        self.assertEqual({k["KeyId"] for k in page["Keys"]}, self.keys)
        for k in page["Keys"]:
            self.assertEqual(k["KeyArn"], self.kmsd.key_arn(k["KeyId"]))

    def test_the_paginator_with_a_page_size(self):
        pages = list(
            self.kms.get_paginator("list_keys").paginate(PaginationConfig={"PageSize": 3})
        )
        self.assertEqual([len(p["Keys"]) for p in pages], [3, 3, 1])
        seen = [k["KeyId"] for p in pages for k in p["Keys"]]
        self.assertEqual(len(seen), len(set(seen)), "no key twice")
        self.assertEqual(set(seen), self.keys)
        # MaxItems: the paginator stops and hands back a token to resume.
        first = self.kms.get_paginator("list_keys").paginate(
            PaginationConfig={"PageSize": 2, "MaxItems": 4}
        ).build_full_result()
        self.assertEqual(len(first["Keys"]), 4)
        rest = self.kms.get_paginator("list_keys").paginate(
            PaginationConfig={"PageSize": 2, "StartingToken": first["NextToken"]}
        ).build_full_result()
        self.assertEqual(
            {k["KeyId"] for k in first["Keys"] + rest["Keys"]}, self.keys
        )

    def test_limit_and_marker_by_hand(self):
        seen, sizes, marker = [], [], None
        while True:
            args = {"Limit": 2}
            if marker is not None:
                args["Marker"] = marker
            page = self.kms.list_keys(**args)
            sizes.append(len(page["Keys"]))
            seen += [k["KeyId"] for k in page["Keys"]]
            if not page["Truncated"]:
                self.assertNotIn("NextMarker", page)
                break
            marker = page["NextMarker"]
            self.assertTrue(marker)
        self.assertEqual(sizes, [2, 2, 2, 1])
        self.assertEqual(len(seen), len(set(seen)))
        self.assertEqual(set(seen), self.keys)

    def test_an_invalid_marker_is_refused(self):
        with self.assertRaises(self.kms.exceptions.ClientError) as e:
            self.kms.list_keys(Limit=2, Marker="not-a-marker-kmsd-gave")
        self.assertError(e, "InvalidMarkerException", 400)
