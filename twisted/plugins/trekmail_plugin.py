from twisted.application.service import ServiceMaker

trekmail = ServiceMaker("trekmail", "trekmail.tap", "TrekMail hosted mail server", "trekmail")
